/**
 * src/settle/decode.ts: content-encoding decoding of response bodies as Envoy streams them, bounded.
 */
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { BodyDecoder, decodeBody, parseContentEncoding } from '../src/settle/decode.js';
import { splitAt } from './helpers/usage-harness.js';

const TEXT = Buffer.from(
  `data: {"choices":[{"delta":{"content":"héllo 😀 日本語"}}]}\n\n`.repeat(200),
  'utf8',
);

const ENCODED: Array<[string, Buffer]> = [
  ['gzip', zlib.gzipSync(TEXT)],
  ['x-gzip', zlib.gzipSync(TEXT)],
  ['deflate', zlib.deflateSync(TEXT)],
  ['deflate', zlib.deflateRawSync(TEXT)],
  ['br', zlib.brotliCompressSync(TEXT)],
  ['GZIP', zlib.gzipSync(TEXT)],
];

const split = splitAt;

describe('parseContentEncoding', () => {
  it('names the supported codings and rejects the rest', () => {
    expect(parseContentEncoding(undefined)).toBe('identity');
    expect(parseContentEncoding('')).toBe('identity');
    expect(parseContentEncoding('identity')).toBe('identity');
    expect(parseContentEncoding(' Gzip ')).toBe('gzip');
    expect(parseContentEncoding('x-gzip')).toBe('gzip');
    expect(parseContentEncoding('deflate')).toBe('deflate');
    expect(parseContentEncoding('br')).toBe('br');
    expect(parseContentEncoding('zstd')).toBeUndefined();
    expect(parseContentEncoding('gzip, br')).toBeUndefined();
  });
});

describe('BodyDecoder', () => {
  it.each(ENCODED)('%s: whole, byte by byte, split at many positions', async (enc, c) => {
    expect((await decodeBody(enc, [c])).body.equals(TEXT)).toBe(true);
    const bytes = await decodeBody(
      enc,
      [...c].map((b) => Uint8Array.of(b)),
    );
    expect(bytes.body.equals(TEXT)).toBe(true);
    expect(bytes).toMatchObject({ outputBytes: TEXT.length, inputBytes: c.length, truncated: false });
    expect(bytes.error).toBeUndefined();
    for (let i = 1; i < c.length; i += Math.max(1, Math.floor(c.length / 40))) {
      expect((await decodeBody(enc, split(c, [i]))).body.equals(TEXT), `split at ${i}`).toBe(true);
    }
  });

  it('identity passes chunks through synchronously', async () => {
    const seen: string[] = [];
    const d = new BodyDecoder(undefined, (c) => seen.push(Buffer.from(c).toString()));
    d.write(Buffer.from('ab'));
    expect(seen).toEqual(['ab']);
    d.write(Buffer.from('c'));
    expect(await d.end()).toEqual({ outputBytes: 3, inputBytes: 3, truncated: false });
  });

  it('a truncated compressed body delivers what decodes, without error', async () => {
    for (const [enc, c] of ENCODED.slice(0, 3)) {
      const r = await decodeBody(enc, [c.subarray(0, Math.floor(c.length / 2))]);
      expect(r.error, enc).toBeUndefined();
      expect(r.body.length).toBeGreaterThan(0);
      expect(TEXT.subarray(0, r.body.length).equals(r.body)).toBe(true);
    }
  });

  it('garbage is an error, not a throw', async () => {
    for (const enc of ['gzip', 'deflate', 'br']) {
      const r = await decodeBody(enc, [Buffer.from('this is not compressed at all, not even close')]);
      expect(r.error, enc).toMatch(/corrupt/);
    }
  });

  it('an unsupported coding decodes nothing and says so', async () => {
    const r = await decodeBody('zstd', [Buffer.from([0x28, 0xb5, 0x2f, 0xfd])]);
    expect(r).toMatchObject({ outputBytes: 0, truncated: false });
    expect(r.error).toMatch(/unsupported content-encoding: zstd/);
  });

  it.each([
    ['gzip', (b: Buffer) => zlib.gzipSync(b, { level: 1 })],
    ['deflate', (b: Buffer) => zlib.deflateSync(b, { level: 1 })],
    [
      'br',
      (b: Buffer) => zlib.brotliCompressSync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 1 } }),
    ],
  ] as const)(
    '%s decompression bomb: output stops at the bound, memory stays bounded',
    async (enc, compress) => {
      // 32 MiB of zeros: a 1:100+ ratio even at the fastest compression level.
      const bomb = compress(Buffer.alloc(32 << 20));
      expect(bomb.length).toBeLessThan(400_000);
      let delivered = 0;
      let largest = 0;
      const d = new BodyDecoder(
        enc,
        (c) => {
          delivered += c.byteLength;
          largest = Math.max(largest, c.byteLength);
        },
        { maxOutputBytes: 1 << 20 },
      );
      for (let i = 0; i < bomb.length; i += 4096) d.write(bomb.subarray(i, i + 4096));
      const r = await d.end();
      expect(r.truncated).toBe(true);
      expect(r.outputBytes).toBe(1 << 20);
      expect(delivered).toBe(1 << 20);
      expect(largest).toBeLessThanOrEqual(64 << 10);
      // Writes after truncation are ignored.
      d.write(bomb);
      expect(delivered).toBe(1 << 20);
    },
  );

  it('end() is idempotent', async () => {
    const d = new BodyDecoder('gzip', () => {});
    d.write(zlib.gzipSync(Buffer.from('x')));
    const a = d.end();
    expect(d.end()).toBe(a);
    expect((await a).outputBytes).toBe(1);
  });
});
