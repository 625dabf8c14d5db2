/**
 * Drives a usage extractor over a fixture in every way the response phase can receive it: whole,
 * byte by byte, split in two at every position (mid-line, mid-UTF-8 character), in three random
 * pieces, and compressed (gzip, deflate, raw deflate, br) through src/settle/decode.ts with the
 * compressed bytes split too. Every way must give the same scan as the whole body.
 */
import * as zlib from 'node:zlib';
import { expect } from 'vitest';
import type { UsageDialect } from '../../src/dialects/usage/index.js';
import { createUsageExtractor, type UsageScan } from '../../src/dialects/usage/index.js';
import { BodyDecoder } from '../../src/settle/decode.js';

export function scanChunks(dialect: UsageDialect, chunks: Uint8Array[], contentType?: string): UsageScan {
  const x = createUsageExtractor(dialect, contentType);
  for (const c of chunks) x.push(c);
  return x.end();
}

export async function scanCompressed(
  dialect: UsageDialect,
  encoding: string,
  compressed: Buffer,
  splitAt: number[],
  contentType?: string,
): Promise<UsageScan> {
  const x = createUsageExtractor(dialect, contentType);
  const d = new BodyDecoder(encoding, (c) => x.push(c));
  let prev = 0;
  for (const at of [...splitAt, compressed.length]) {
    d.write(compressed.subarray(prev, at));
    prev = at;
  }
  const r = await d.end();
  expect(r.error).toBeUndefined();
  expect(r.truncated).toBe(false);
  return x.end();
}

/** Same scan, whatever the chunking; returns the whole-body scan. */
export async function expectChunkingInvariant(
  dialect: UsageDialect,
  fixture: string,
  contentType?: string,
): Promise<UsageScan> {
  const bytes = Buffer.from(fixture, 'utf8');
  const whole = scanChunks(dialect, [bytes], contentType);
  // Byte by byte.
  expect(
    scanChunks(
      dialect,
      [...bytes].map((b) => Uint8Array.of(b)),
      contentType,
    ),
  ).toEqual(whole);
  // Two pieces, split at every position.
  for (let i = 1; i < bytes.length; i++) {
    const s = scanChunks(dialect, [bytes.subarray(0, i), bytes.subarray(i)], contentType);
    if (JSON.stringify(s) !== JSON.stringify(whole)) expect(s, `split at ${i}`).toEqual(whole);
  }
  // Three pieces at pseudo-random positions.
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let k = 0; k < 200; k++) {
    const [a, b] = [rnd(bytes.length), rnd(bytes.length)].sort((x, y) => x - y);
    expect(
      scanChunks(dialect, [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)], contentType),
    ).toEqual(whole);
  }
  // Compressed, the compressed bytes split at several positions.
  const encodings: Array<[string, Buffer]> = [
    ['gzip', zlib.gzipSync(bytes)],
    ['deflate', zlib.deflateSync(bytes)],
    ['deflate', zlib.deflateRawSync(bytes)],
    ['br', zlib.brotliCompressSync(bytes)],
  ];
  for (const [enc, c] of encodings) {
    expect(await scanCompressed(dialect, enc, c, [], contentType), enc).toEqual(whole);
    const step = Math.max(1, Math.floor(c.length / 25));
    for (let i = 1; i < c.length; i += step) {
      expect(await scanCompressed(dialect, enc, c, [i], contentType), `${enc} split at ${i}`).toEqual(whole);
    }
    expect(
      await scanCompressed(
        dialect,
        enc,
        c,
        Array.from({ length: c.length - 1 }, (_, i) => i + 1),
        contentType,
      ),
      `${enc} byte by byte`,
    ).toEqual(whole);
  }
  return whole;
}

/** An SSE body from [event, data] pairs (event undefined: data-only), with the given line ending. */
export function sse(events: Array<[string | undefined, unknown]>, eol = '\n'): string {
  return events
    .map(
      ([e, d]) =>
        `${e ? `event: ${e}${eol}` : ''}data: ${typeof d === 'string' ? d : JSON.stringify(d)}${eol}${eol}`,
    )
    .join('');
}

/** Token count stub for resolveUsage: one token per UTF-16 code unit (deterministic). */
export const countChars = (t: string): number => t.length;

/** `b` cut at the offsets `at` (ascending): the pieces, in order. */
export function splitAt(b: Buffer, at: number[]): Buffer[] {
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of [...at, b.length]) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  return out;
}
