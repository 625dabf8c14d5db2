/**
 * The SSE extractor parses only the events that can carry usage as they come; the others wait as raw
 * bytes (bounded) and are parsed only if the output text is asked for. Whatever the body, the chunking
 * (split anywhere, inside multi-byte characters too, chunk buffers reused by the caller), the bounds
 * and the content-encoding, its scan must equal the reference's: every event parsed, in order
 * (helpers/usage-reference.ts).
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import * as zlib from 'node:zlib';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  createUsageExtractor,
  type UsageDialect,
  type UsageExtractorOptions,
  type UsageScan,
} from '../src/dialects/usage/index.js';
import { BodyDecoder } from '../src/settle/decode.js';
import { anthropicSse, chatSse, geminiSse, responsesSse } from './helpers/provider-bodies.js';
import { splitAt } from './helpers/usage-harness.js';
import { referenceSseScan } from './helpers/usage-reference.js';

/** mulberry32: a small seeded PRNG (uniform enough for every modulus). */
function prng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}
type Rnd = ReturnType<typeof prng>;
const pick = <T>(rnd: Rnd, xs: readonly T[]): T => xs[rnd(xs.length)];

const PIECES = [
  'hi',
  ' wörld',
  '日本語',
  '😀',
  '',
  ' ',
  'a"usage":{"x":1}',
  '\\u0075',
  'usage',
  '[DONE]',
  'x'.repeat(300),
];
const text = (rnd: Rnd) => Array.from({ length: 1 + rnd(3) }, () => pick(rnd, PIECES)).join('');
const n = (rnd: Rnd) => rnd(1000);

/** Data that is not a plain JSON event: escaped keys, null/duplicate usage, garbage, several lines. */
const ODD = [
  '{oops',
  '',
  ' [DONE] ',
  '{"us\\u0061ge":{"prompt_tokens":7,"completion_tokens":3,"input_tokens":7,"output_tokens":3}}',
  '{"usage" :\n null, "choices":[{"text":"t"}]}',
  '{"usage":{"prompt_tokens":1,"input_tokens":1}, "usage":null}',
  '{"type":"message_delta","usage":{"output_tokens":9}}',
  '{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}',
  '{"usageMetadata":null,"candidates":[{"content":{"parts":[{"text":"g"}]}}]}',
  '\u00a0{"choices":[{"text":"nbsp"}],"delta":"d"}',
  '{"choices":[{"text":"a"}]}\n{"x":1}',
  '{"choices":[{"delta":{"content":"two"}}],\n"type":"response.output_text.delta","delta":"lines"}',
];

type Gen = (rnd: Rnd) => [string | undefined, unknown];
const openaiUsage = (rnd: Rnd) => ({
  prompt_tokens: n(rnd),
  completion_tokens: n(rnd),
  prompt_tokens_details: { cached_tokens: rnd(50) },
  completion_tokens_details: { reasoning_tokens: rnd(20) },
});
const GENS: Record<string, Gen> = {
  'openai.chat': (rnd) => {
    const r = rnd(10);
    const delta = rnd(5)
      ? { content: text(rnd) }
      : { tool_calls: [{ function: { name: text(rnd), arguments: text(rnd) } }] };
    if (r < 6) return [undefined, { choices: [{ index: 0, delta }], ...(rnd(2) && { usage: null }) }];
    if (r < 7) return [undefined, { choices: [], usage: openaiUsage(rnd) }];
    if (r < 8) return [undefined, { choices: [{ index: 0, delta }], usage: openaiUsage(rnd) }];
    return [undefined, r < 9 ? '[DONE]' : pick(rnd, ODD)];
  },
  'openai.responses': (rnd) => {
    const r = rnd(9);
    if (r < 4)
      return [
        pick(rnd, ['response.output_text.delta', undefined]),
        { type: 'response.output_text.delta', delta: text(rnd) },
      ];
    if (r < 5)
      return ['response.created', { type: 'response.created', response: { usage: null, output: [] } }];
    if (r < 6) {
      const usage = {
        input_tokens: n(rnd),
        output_tokens: n(rnd),
        output_tokens_details: { reasoning_tokens: 1 },
      };
      return ['response.completed', { type: 'response.completed', response: { usage } }];
    }
    if (r < 7)
      return [
        'response.output_item.added',
        { type: 'response.output_item.added', item: { type: 'function_call', name: text(rnd) } },
      ];
    if (r < 8) return ['response.reasoning_summary_text.delta', { delta: text(rnd) }];
    return [pick(rnd, [undefined, 'response.output_text.delta', 'response.completed']), pick(rnd, ODD)];
  },
  'anthropic.messages': (rnd) => {
    const r = rnd(9);
    if (r < 1) {
      const usage = { input_tokens: n(rnd), output_tokens: rnd(5), cache_read_input_tokens: rnd(9) };
      return ['message_start', { type: 'message_start', message: { usage } }];
    }
    if (r < 5) {
      const delta = pick(rnd, [{ text: text(rnd) }, { partial_json: text(rnd) }, { thinking: text(rnd) }]);
      return ['content_block_delta', { type: 'content_block_delta', delta }];
    }
    if (r < 6)
      return [
        'content_block_start',
        { type: 'content_block_start', content_block: { type: 'tool_use', name: text(rnd) } },
      ];
    if (r < 7) return ['message_delta', { type: 'message_delta', usage: { output_tokens: n(rnd) } }];
    if (r < 8) return ['ping', { type: 'ping' }];
    return [pick(rnd, [undefined, 'message_delta', 'content_block_delta']), pick(rnd, ODD)];
  },
  'gemini.generateContent': (rnd) => {
    const r = rnd(7);
    if (r === 6) return [undefined, pick(rnd, ODD)];
    const parts = [
      { text: text(rnd) },
      ...(rnd(4) ? [] : [{ functionCall: { name: 'f', args: { a: text(rnd) } } }]),
    ];
    const chunk: Record<string, unknown> = {
      candidates: [{ content: { parts }, ...(r === 0 && { finishReason: 'STOP' }) }],
    };
    if (r < 4) chunk.usageMetadata = { promptTokenCount: n(rnd), candidatesTokenCount: n(rnd) };
    return [undefined, chunk];
  },
};
const DIALECTS = Object.keys(GENS) as UsageDialect[];

function randomBody(rnd: Rnd, gen: Gen): Buffer {
  const eol = rnd(4) ? '\n' : '\r\n';
  let s = rnd(5) ? '' : `: comment${eol}`;
  for (let i = rnd(40); i > 0; i--) {
    const [event, d] = gen(rnd);
    const data = typeof d === 'string' ? d : JSON.stringify(d);
    if (event) s += `event: ${event}${eol}`;
    if (rnd(15) === 0) s += `id: ${i}${eol}`;
    s += `${data
      .split('\n')
      .map((l) => `data:${rnd(4) ? ' ' : ''}${l}${eol}`)
      .join('')}${eol}`;
  }
  let b = Buffer.from(s);
  // Invalid UTF-8 at a line end, and cut bodies (mid-event, mid-character).
  if (rnd(10) === 0)
    b = Buffer.concat([b, Buffer.from([0x64, 0x61, 0x74, 0x61, 0x3a, 0xe2, 0x82, 0x0a, 0xff, 0x0a, 0x0a])]);
  if (rnd(8) === 0) b = b.subarray(0, rnd(b.length + 1));
  return b;
}

/** Cut positions: none, every byte, random ones, or inside multi-byte characters. */
function cuts(rnd: Rnd, b: Buffer): number[] {
  const k = rnd(5);
  if (k === 0) return [];
  if (k === 1) return Array.from({ length: b.length }, (_, i) => i);
  const at: number[] = [];
  if (k === 2) for (let i = 0; i < b.length; i++) if ((b[i] & 0xc0) === 0x80 && rnd(3) === 0) at.push(i);
  for (let i = rnd(10); i > 0; i--) at.push(rnd(b.length + 1));
  return at.sort((x, y) => x - y);
}

const pieces = splitAt;

/** The scan as plain data; `understoodFirst` reads the lazily worked-out fields in the other order. */
function plain(scan: UsageScan, understoodFirst: boolean): UsageScan {
  const understood = understoodFirst ? scan.understood : undefined;
  const copy = { ...scan };
  if (understoodFirst) expect(copy.understood).toBe(understood);
  return copy;
}

/** Pushes copies of the pieces, overwriting each after its push (a caller reusing its buffer). */
function scanReused(
  dialect: UsageDialect,
  chunks: Buffer[],
  contentType: string | undefined,
  opts: UsageExtractorOptions,
) {
  const x = createUsageExtractor(dialect, contentType, opts);
  for (const c of chunks) {
    const copy = Buffer.from(c);
    x.push(copy);
    copy.fill(0x7b);
  }
  return x.end();
}

function randomOpts(rnd: Rnd): UsageExtractorOptions {
  if (rnd(3) > 0) return {};
  const maxLineBytes = 60 + rnd(3000);
  // tailBytes is also the bound of the events waiting for their text: small ones make them flush.
  return { maxLineBytes, tailBytes: 1 + rnd(maxLineBytes), ...(rnd(2) && { maxTextChars: rnd(200) }) };
}

describe('lazy SSE parsing equals parsing every event', () => {
  it.each(DIALECTS)('%s: random streams, chunkings and bounds', (dialect) => {
    const rnd = prng(DIALECTS.indexOf(dialect) + 1);
    for (let i = 0; i < 600; i++) {
      const body = randomBody(rnd, GENS[dialect]);
      const opts = randomOpts(rnd);
      const forced = rnd(3) > 0;
      const want = referenceSseScan(dialect, body, opts, !forced);
      const got = scanReused(
        dialect,
        pieces(body, cuts(rnd, body)),
        forced ? 'text/event-stream' : undefined,
        opts,
      );
      const g = plain(got, rnd(2) === 0);
      if (JSON.stringify(g) !== JSON.stringify(want))
        expect(g, `#${i} ${JSON.stringify(body.toString())}`).toEqual(want);
    }
  });

  const fixtures: Array<[UsageDialect, string]> = [
    ['openai.chat', chatSse(['Hé', 'llo ', '😀', ' 日本語'], { prompt: 12, output: 7, cached: 3 })],
    ['openai.chat', chatSse(['Hé', 'llo ', '😀', ' 日本語'])],
    ['openai.responses', responsesSse(['naïve ', '😀', ' text'], 30, 9, 4)],
    ['anthropic.messages', anthropicSse(['Bonjour ', '😀', ' 日本'], 40, 11, 5)],
    ['gemini.generateContent', geminiSse(['Hallo ', 'wörld', ' 😀'], 22, 6)],
  ];

  it.each(fixtures)(
    '%s provider fixture, whole and cut before each event end, split inside characters',
    (dialect, fixture) => {
      const full = Buffer.from(fixture);
      const rnd = prng(full.length);
      // Cut after every event (usage present or not yet), and anywhere.
      const ends = [
        full.length,
        ...[...fixture.matchAll(/\n\n/g)].map((m) => Buffer.byteLength(fixture.slice(0, m.index))),
        rnd(full.length),
      ];
      for (const end of ends) {
        const body = full.subarray(0, end);
        const want = referenceSseScan(dialect, body);
        for (let k = 0; k < 30; k++) {
          const got = plain(
            scanReused(dialect, pieces(body, cuts(rnd, body)), 'text/event-stream', {}),
            k % 2 === 0,
          );
          expect(got).toEqual(want);
        }
      }
    },
  );

  it.each(DIALECTS)('%s: gzip-encoded, the compressed bytes split anywhere', async (dialect) => {
    const rnd = prng(100 + DIALECTS.indexOf(dialect));
    for (let i = 0; i < 40; i++) {
      const body = randomBody(rnd, GENS[dialect]);
      const gz = zlib.gzipSync(body);
      const x = createUsageExtractor(dialect, 'text/event-stream');
      const d = new BodyDecoder('gzip', (c) => x.push(c));
      for (const p of pieces(gz, cuts(rnd, gz))) d.write(p);
      expect((await d.end()).error).toBeUndefined();
      expect(plain(x.end(), i % 2 === 0)).toEqual(referenceSseScan(dialect, body, {}, false));
    }
  });
});

describe('what is parsed when', () => {
  afterEach(() => vi.restoreAllMocks());
  const deltas = Array.from({ length: 50 }, (_, i) => `word${i} `);

  it('with the final usage, only the usage chunk is parsed; the deltas only when the text is read', () => {
    const parse = vi.spyOn(JSON, 'parse');
    const x = createUsageExtractor('openai.chat', 'text/event-stream');
    x.push(Buffer.from(chatSse(deltas, { prompt: 5, output: 50 })));
    const scan = x.end();
    expect(parse).toHaveBeenCalledTimes(1);
    expect(scan.output).toEqual({ output: 50, reasoning: 0 });
    expect(scan.text.text).toBe(deltas.join(''));
    // The deltas, the role and finish chunks, and the usage chunk again (for its text, here none).
    expect(parse).toHaveBeenCalledTimes(1 + deltas.length + 3);
  });

  it('waiting events are bounded by tailBytes: past it they are parsed as they come', () => {
    const parse = vi.spyOn(JSON, 'parse');
    const x = createUsageExtractor('openai.chat', 'text/event-stream', { tailBytes: 1000 });
    const body = Buffer.from(chatSse(deltas));
    x.push(body);
    // Each chunk is ~150 bytes: at most ~7 wait at a time.
    expect(parse.mock.calls.length).toBeGreaterThanOrEqual(deltas.length + 2 - 1000 / 100);
    expect(x.end().text.text).toBe(deltas.join(''));
  });

  it('event names count against the bound: long distinct names do not wait, a repeated one is held once', () => {
    const parse = vi.spyOn(JSON, 'parse');
    const x = createUsageExtractor('openai.chat', 'text/event-stream', { tailBytes: 4096 });
    const data = (i: number) => `data: {"choices":[{"delta":{"content":"${i} "}}]}\n\n`;
    // 40 events, each named by a distinct 3,000-character name (6,000 bytes held as UTF-16): none
    // fits the 4,096-byte bound, so each is parsed as it comes instead of waiting with its name.
    for (let i = 0; i < 40; i++)
      x.push(Buffer.from(`event: ${String(i).padStart(3, '0')}${'n'.repeat(3000)}\n${data(i)}`));
    expect(parse.mock.calls.length).toBeGreaterThanOrEqual(40);
    expect(x.end().text.text).toBe(Array.from({ length: 40 }, (_, i) => `${i} `).join(''));
    parse.mockClear();
    // The same 1,000-character name on every event costs its bytes once: they wait as usual.
    const y = createUsageExtractor('openai.chat', 'text/event-stream', { tailBytes: 4096 });
    const name = 'm'.repeat(1000);
    for (let i = 0; i < 10; i++) y.push(Buffer.from(`event: ${name}\n${data(i)}`));
    expect(parse).not.toHaveBeenCalled();
    expect(y.end().text.text).toBe(Array.from({ length: 10 }, (_, i) => `${i} `).join(''));
  });

  it('a line that spans many tiny chunks is held in one buffer, not one object per chunk', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const x = createUsageExtractor('openai.chat', 'text/event-stream');
    const line = Buffer.from(`data: ${'"'.repeat(300_000)}`);
    gc();
    const before = process.memoryUsage();
    for (let i = 0; i < line.length; i++) x.push(line.subarray(i, i + 1));
    gc();
    const after = process.memoryUsage();
    const held = after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers;
    // ~300 KB of line (at most twice that while the buffer doubles); a Buffer per byte was ~30 MB.
    expect(held).toBeLessThan(4 * 2 ** 20);
    expect(x.end().understood).toBe(false);
  });

  it('a JSON answer in tiny chunks is held in one buffer too, and read whole', () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    const x = createUsageExtractor('openai.chat');
    const content = 'word '.repeat(60_000);
    const body = Buffer.from(
      JSON.stringify({
        choices: [{ message: { role: 'assistant', content } }],
        usage: { prompt_tokens: 7, completion_tokens: 123, total_tokens: 130 },
      }),
    );
    gc();
    const before = process.memoryUsage();
    for (let i = 0; i < body.length; i++) x.push(body.subarray(i, i + 1));
    gc();
    const after = process.memoryUsage();
    expect(after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers).toBeLessThan(
      4 * 2 ** 20,
    );
    const scan = x.end();
    expect([scan.prompt?.prompt, scan.output?.output, scan.bytes]).toEqual([7, 123, body.length]);
  });

  it('probing the events of one large chunk is linear: byte searches do not rescan the chunk', () => {
    // Events with no backslash and no `g` (the byte the usage-key search runs on): a search bounded
    // only by the chunk's end would run to its end for every event.
    const event = 'data: {"choices":[{"delta":{"content":"x"}}]}\n\n';
    const body = Buffer.from(event.repeat(5000));
    let scanned = 0;
    const indexOf = Buffer.prototype.indexOf;
    vi.spyOn(Buffer.prototype, 'indexOf').mockImplementation(function (this: Buffer, v, from, enc) {
      const at = indexOf.call(this, v, from, enc as BufferEncoding);
      const start = typeof from === 'number' ? from : 0;
      if (this === body) scanned += (at < 0 ? this.length : at + 1) - start;
      return at;
    });
    const x = createUsageExtractor('openai.chat', 'text/event-stream');
    x.push(body);
    expect(x.end().text.text).toBe('x'.repeat(5000));
    expect(scanned).toBeLessThan(3 * body.length);
  });
});
