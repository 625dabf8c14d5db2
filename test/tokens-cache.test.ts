/**
 * Counting what is new only (src/tokens/count-cache.ts): text pieces and tool-definition lists seen
 * before are served from a bounded cache keyed by a SHA-256 digest. The counts must stay
 * exactly the ones a fresh count gives (and so tiktoken's): a conversation counted cold and warm gives
 * identical totals, a changed message is recounted, two different texts never share a count, and the
 * same holds in a token worker (the real CLI, bodies above OFFLOAD_BYTES).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { OFFLOAD_BYTES } from '../src/decision/decide.js';
import { parseBody } from '../src/dialects/body.js';
import { isParseError, type ParsedCall, type Prompt, type ToolDef } from '../src/dialects/types.js';
import {
  clearCountCache,
  countCacheStats,
  countChat,
  countPiece,
  countPromptTokens,
  countToolDefs,
} from '../src/tokens/count.js';
import { CACHE_MIN_CHARS, CountCache, digestKey } from '../src/tokens/count-cache.js';
import { countText, getCounter, referenceCounter } from '../src/tokens/encoders.js';
import { EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';

const WORDS = [
  'token',
  'Budget',
  "isn't",
  'naïve',
  '東京',
  'x=1;',
  '\n\n',
  '😀',
  'rate-limit',
  '12345',
  'the',
];

function prose(chars: number, seed: number): string {
  const out: string[] = [];
  let n = 0;
  let s = seed >>> 0;
  while (n < chars) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const w = WORDS[(s >>> 8) % WORDS.length];
    out.push(w);
    n += w.length + 1;
  }
  return out.join(' ');
}

const TOOLS: ToolDef[] = [
  {
    name: 'read_file',
    description: `Read a file of the repository. ${prose(600, 77)}.`,
    properties: [
      { name: 'path', type: 'string', description: 'Path relative to the root' },
      { name: 'mode', type: 'string', description: 'How', enum: ['text', 'binary'] },
    ],
  },
  { name: 'run', description: prose(300, 78), properties: [], extra: '{"$defs":{"x":{"type":"integer"}}}' },
];

/** An agent conversation after `turns` turns: system prompt, then alternating user/assistant turns. */
function conversation(turns: number, seed = 1): Prompt {
  const messages = [{ role: 'system', parts: [prose(4000, seed)] }];
  for (let t = 0; t < turns; t++)
    messages.push({
      role: t % 2 ? 'assistant' : 'user',
      parts: [prose(1000 + ((t * 797) % 3000), seed * 1000 + t)],
    });
  return { kind: 'chat', messages, texts: [], preTokenized: 0, images: 0, toolDefs: TOOLS };
}

const call = (prompt: Prompt): ParsedCall => ({
  dialect: 'openai.chat',
  model: 'm',
  n: 1,
  stream: false,
  tools: [],
  prompt,
});
const OPTS = { imageTokens: 765 };

/** The reference: tiktoken (WASM) through the same chat formula. */
function reference(p: Prompt, encoding = 'o200k_base'): number {
  const enc = referenceCounter(encoding);
  return countChat(enc, p) + countToolDefs(enc, p.toolDefs, encoding);
}

beforeEach(() => clearCountCache());

describe('cached counting gives the counts a fresh count gives', () => {
  it('the same conversation counted cold and warm: identical totals, equal to tiktoken’s', () => {
    for (const encoding of ['o200k_base', 'cl100k_base']) {
      const p = conversation(30);
      clearCountCache();
      const cold = countPromptTokens(call(p), encoding, OPTS);
      const misses = countCacheStats().misses;
      expect(misses).toBeGreaterThan(30);
      const warm = countPromptTokens(call(p), encoding, OPTS);
      expect(warm).toBe(cold);
      expect(countCacheStats().misses).toBe(misses); // nothing recounted
      expect(countCacheStats().hits).toBeGreaterThan(30);
      expect(cold).toBe(reference(p, encoding));
    }
  });

  it('an agent loop: each call resends the history; only the new turn is counted, totals stay exact', () => {
    for (let turns = 1; turns <= 40; turns++) {
      const p = conversation(turns);
      const before = countCacheStats().misses;
      const warm = countPromptTokens(call(p), 'o200k_base', OPTS);
      if (turns > 1) expect(countCacheStats().misses - before).toBe(1); // the new message only
      clearCountCache();
      const cold = countPromptTokens(call(p), 'o200k_base', OPTS);
      expect(warm).toBe(cold);
      // warm the cache back up to the history so far, as a running server would have it
      clearCountCache();
      countPromptTokens(call(p), 'o200k_base', OPTS);
    }
    expect(countPromptTokens(call(conversation(40)), 'o200k_base', OPTS)).toBe(reference(conversation(40)));
  });

  it('a changed message is recounted (one character, one code unit, or its role)', () => {
    const p = conversation(10);
    const total = countPromptTokens(call(p), 'o200k_base', OPTS);
    const edits: Array<(s: string) => string> = [
      (s) => `${s.slice(0, 500)}X${s.slice(501)}`,
      (s) => `${s} 😀`,
      (s) => s.replace('東京', '東京東京'),
      (s) => s.slice(1),
    ];
    for (const edit of edits) {
      const q = structuredClone(p);
      q.messages[5].parts[0] = edit(q.messages[5].parts[0]);
      expect(q.messages[5].parts[0]).not.toBe(p.messages[5].parts[0]);
      const before = countCacheStats().misses;
      const n = countPromptTokens(call(q), 'o200k_base', OPTS);
      expect(countCacheStats().misses - before).toBe(1);
      expect(n).toBe(reference(q));
    }
    const r = structuredClone(p);
    r.messages[5].role = 'tool';
    expect(countPromptTokens(call(r), 'o200k_base', OPTS)).toBe(reference(r));
    expect(countPromptTokens(call(p), 'o200k_base', OPTS)).toBe(total);
  });

  it('tool definitions: cached as a list, a changed description or encoding is recounted', () => {
    const enc = getCounter('o200k_base');
    const a = countToolDefs(enc, TOOLS, 'o200k_base');
    expect(countToolDefs(enc, TOOLS, 'o200k_base')).toBe(a);
    expect(a).toBe(countToolDefs(referenceCounter('o200k_base'), TOOLS, 'o200k_base'));
    const changed = structuredClone(TOOLS);
    changed[0].properties[1].enum = ['text', 'binary', 'hex'];
    expect(countToolDefs(enc, changed, 'o200k_base')).toBe(a + 3 + 1);
    // the cl100k constants (func_init 10) with the o200k counter: a different key, not the o200k total
    expect(countToolDefs(enc, TOOLS, 'cl100k_base')).toBe(a + 3 * TOOLS.length);
  });

  it('the fast counter and tiktoken never share entries', () => {
    const text = prose(5000, 9);
    const fast = countPiece(getCounter('o200k_base'), text);
    const ref = countPiece(referenceCounter('o200k_base'), text);
    expect(fast).toBe(ref);
    expect(countPiece(getCounter('cl100k_base'), text)).toBe(countText(getCounter('cl100k_base'), text));
  });
});

describe('two different texts never share a count', () => {
  it('texts UTF-8 would merge (lone surrogates vs U+FFFD) get different keys and their own counts', () => {
    const base = 'x '.repeat(CACHE_MIN_CHARS);
    const texts = [
      `${base}\uD800`,
      `${base}\uDC00`,
      `${base}\uFFFD`,
      `${base}\uD800\uDC00`,
      `${base}\u{10000}`,
    ];
    const keys = new Set(texts.map((t) => digestKey(0, t)));
    expect(keys.size).toBe(texts.length - 1); // "\uD800\uDC00" is "\u{10000}": the same text
    const enc = getCounter('o200k_base');
    for (const t of [...texts, ...texts].reverse()) expect(countPiece(enc, t)).toBe(countText(enc, t));
  });

  it('Latin-1 lookalikes, one-byte vs two-byte strings, and a text equal to a tool list’s JSON', () => {
    const base = prose(400, 3);
    const pairs = [
      [`${base}é`, `${base}Ã©`],
      [`${base}\u00ff`, `${base}\u0179`],
      [`${base}\u0000`, base],
    ];
    for (const [a, b] of pairs) expect(digestKey(0, a)).not.toBe(digestKey(0, b));
    expect(digestKey(0, base)).not.toBe(digestKey(1, base)); // tags are separate key spaces
    const enc = getCounter('o200k_base');
    const json = JSON.stringify(['o200k_base', TOOLS]);
    const asTools = countToolDefs(enc, TOOLS, 'o200k_base');
    expect(countPiece(enc, json)).toBe(countText(enc, json));
    expect(countPiece(enc, json)).not.toBe(asTools);
    expect(countToolDefs(enc, TOOLS, 'o200k_base')).toBe(asTools);
  });

  it('random texts: every cached count equals the fresh count (property)', () => {
    const enc = getCounter('o200k_base');
    const long = fc.string({ unit: 'binary', minLength: CACHE_MIN_CHARS, maxLength: 700 });
    fc.assert(
      fc.property(fc.array(long, { minLength: 2, maxLength: 8 }), fc.nat(6), (texts, k) => {
        // near-duplicates: the same texts with one unit changed
        const all = [
          ...texts,
          ...texts.map((t) => t.slice(0, k) + String.fromCharCode(t.charCodeAt(k) ^ 1) + t.slice(k + 1)),
        ];
        for (const t of [...all, ...all]) expect(countPiece(enc, t)).toBe(countText(enc, t));
        const distinct = new Set(all);
        expect(new Set([...distinct].map((t) => digestKey(0, t))).size).toBe(distinct.size);
      }),
      { numRuns: 200 },
    );
  });
});

describe('the cache is bounded', () => {
  it('keeps at most maxEntries; what was used within the last maxEntries / 2 insertions stays', () => {
    const c = new CountCache(100);
    const len = (t: string) => t.length;
    for (let i = 0; i < 1000; i++) {
      c.count(0, `text ${i}`, len);
      expect(c.size).toBeLessThanOrEqual(100);
    }
    const misses = c.misses;
    c.count(0, 'text 999', len);
    c.count(0, 'text 951', len);
    expect(c.misses).toBe(misses); // recent: cached
    c.count(0, 'text 0', len);
    expect(c.misses).toBe(misses + 1); // long unused: dropped
    for (let i = 1000; i < 1049; i++) c.count(0, `text ${i}`, len);
    c.count(0, 'text 951', len); // used 50 insertions ago: still cached
    expect(c.misses).toBe(misses + 50);
    for (let i = 1049; i < 1300; i++) c.count(0, `text ${i}`, len);
    c.count(0, 'text 951', len);
    expect(c.misses).toBe(misses + 50 + 251 + 1); // unused since: dropped
    expect(() => c.count(128, 'x', len)).toThrow(RangeError);
  });
});

describe('in a token worker (the real CLI): a resent history counts the same as the first time', () => {
  const LIMIT = 100_000_000;
  let app: TollgateProc;
  let envoy: EnvoyClient;
  beforeAll(async () => {
    app = await spawnTollgate({
      yaml: `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    default_max_output_tokens: 100
limits:
  - name: tenant-tokens
    per: tenant
    tokens: ${LIMIT}
    every: 1h
server:
  decision_deadline: 10s
`,
    });
    envoy = new EnvoyClient(app.grpcPort);
  }, 30_000);
  afterAll(async () => {
    envoy?.close();
    await app?.stop();
  });

  it('growing conversations above OFFLOAD_BYTES, each sent twice: exact counts every time', async () => {
    const tools = [
      {
        type: 'function',
        function: {
          name: 'read_file',
          description: prose(2000, 5),
          parameters: { type: 'object', properties: { path: { type: 'string', description: 'p' } } },
        },
      },
    ];
    let tenant = 0;
    for (let turns = 10; turns <= 24; turns += 2) {
      const messages = [
        { role: 'system', content: prose(4000, 1) },
        ...Array.from({ length: turns }, (_, t) => ({
          role: t % 2 ? 'assistant' : 'user',
          content: prose(2500, 100 + t),
        })),
      ];
      const body = { model: 'gpt-4o', messages, tools, max_tokens: 10 };
      expect(Buffer.byteLength(JSON.stringify(body))).toBeGreaterThanOrEqual(OFFLOAD_BYTES);
      const p = parseBody('openai.chat', JSON.stringify(body));
      if (isParseError(p)) throw new Error(p.error);
      const want =
        countChat(referenceCounter('o200k_base'), p.prompt) +
        countToolDefs(referenceCounter('o200k_base'), p.prompt.toolDefs, 'o200k_base') +
        10;
      for (let again = 0; again < 2; again++) {
        const a = await envoy.check({ body, headers: { 'x-tenant-id': `w-${++tenant}` } });
        expect(a.allowed, a.body).toBe(true);
        expect(LIMIT - Number(a.headers['x-ratelimit-remaining-tokens'])).toBe(want);
      }
    }
  }, 60_000);
});
