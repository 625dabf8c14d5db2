/**
 * Mid-size bodies counted on the event loop within a budget of new text, the rest in a token worker
 * (src/decision/count-here.ts): every path gives countPromptTokens's number, cold or warm.
 * The worker is the compiled one (dist/, built by `npm test` before vitest); without it the pool
 * counts inline and the numbers are checked all the same.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { countHere, NEW_CHARS_HERE } from '../src/decision/count-here.js';
import { parseBody } from '../src/dialects/body.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { TokenPool } from '../src/offload/pool.js';
import {
  clearCountCache,
  countCacheStats,
  countPromptTokens,
  countPromptTokensWithin,
  primeCounts,
  uncachedPieces,
} from '../src/tokens/count.js';

const WORKER = new URL('../dist/src/offload/worker.js', import.meta.url);
const pool = new TokenPool(1, existsSync(fileURLToPath(WORKER)) ? { workerUrl: WORKER } : {});
afterAll(() => pool.close());
const OPTS = { imageTokens: 765 };
const ENCODINGS = ['o200k_base', 'cl100k_base'];

function prose(chars: number, seed: number): string {
  const words = ['token', 'Budget', "isn't", 'naïve', '東京', 'x=1;', '\n\n', '😀', 'rate-limit', '12345'];
  const out: string[] = [];
  let n = 0;
  let s = seed;
  while (n < chars) {
    s = (s * 1103515245 + 12345) >>> 0;
    const w = words[s % words.length];
    out.push(w);
    n += w.length + 1;
  }
  return out.join(' ');
}

function parse(body: unknown, dialect: 'openai.chat' | 'openai.completions' = 'openai.chat'): ParsedCall {
  const p = parseBody(dialect, JSON.stringify(body));
  if (isParseError(p)) throw new Error(p.error);
  return p;
}

/** countPromptTokens cold, for every encoding; the cache is left empty. */
function expected(call: ParsedCall): Record<string, number> {
  const want: Record<string, number> = {};
  for (const e of ENCODINGS) {
    clearCountCache();
    want[e] = countPromptTokens(call, e, OPTS);
  }
  clearCountCache();
  return want;
}

beforeEach(() => clearCountCache());

describe('countHere: counted here within a budget of new text, the rest in a worker', () => {
  it('a growing conversation: cold (new text to the worker), then warm (here), exact each turn', async () => {
    const tools = [
      { type: 'function', function: { name: 'read', description: prose(3000, 9), parameters: {} } },
    ];
    const messages: Array<{ role: string; content: string }> = [{ role: 'system', content: prose(4000, 1) }];
    for (let t = 0; t < 30; t++)
      messages.push({ role: t % 2 ? 'assistant' : 'user', content: prose(1500, t) });
    const wants: Array<Record<string, number>> = [];
    const calls: ParsedCall[] = [];
    for (let turn = 0; turn < 4; turn++) {
      messages.push({ role: 'user', content: prose(1200, 100 + turn) }, { role: 'tool', content: 'ok' });
      calls.push(parse({ model: 'm', messages: [...messages], tools }));
      wants.push(expected(calls[turn]));
    }
    for (let turn = 0; turn < 4; turn++) {
      const before = countCacheStats();
      expect(await countHere(calls[turn], ENCODINGS, pool, OPTS)).toEqual(wants[turn]);
      if (turn > 0) expect(countCacheStats().hits - before.hits).toBeGreaterThan(30); // the history
    }
    expect(pool.crashes).toBe(0);
  });

  it('texts with lone surrogates and repeated texts, primed from the worker: same numbers', async () => {
    const odd = `${prose(400, 3)}\ud800${prose(400, 4)}`;
    const call = parse({
      model: 'm',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: odd },
            { type: 'text', text: odd },
          ],
        },
        { role: 'user', content: prose(NEW_CHARS_HERE, 5) },
      ],
    });
    const want = expected(call);
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, NEW_CHARS_HERE)).toBeUndefined();
    expect(await countHere(call, ENCODINGS, pool, OPTS)).toEqual(want);
    expect(uncachedPieces(call, 'o200k_base')).toEqual([]);
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, 0)).toBe(want.o200k_base); // all cached
  });

  it('many short messages, big tool lists, completions prompts: exact', async () => {
    const short = parse({
      model: 'm',
      messages: Array.from({ length: 400 }, (_, i) => ({ role: 'user', content: prose(120, i) })),
    });
    const bigTools = parse({
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      tools: Array.from({ length: 60 }, (_, i) => ({
        type: 'function',
        function: { name: `f${i}`, description: prose(700, i), parameters: {} },
      })),
    });
    const completions = parse(
      { model: 'm', prompt: [prose(30_000, 1), prose(20_000, 2)] },
      'openai.completions',
    );
    for (const call of [short, bigTools, completions]) {
      const want = expected(call);
      expect(await countHere(call, ENCODINGS, pool, OPTS)).toEqual(want);
      expect(await countHere(call, ENCODINGS, pool, OPTS)).toEqual(want); // warm
    }
  });

  it('countPromptTokensWithin: the number within budget, undefined past it; bad primes are ignored', () => {
    const call = parse({ model: 'm', messages: [{ role: 'user', content: prose(5000, 7) }] });
    const want = expected(call).o200k_base;
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, 4000)).toBeUndefined();
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, 6000)).toBe(want);
    clearCountCache();
    const text = call.prompt.messages[0].parts[0];
    expect(primeCounts('o200k_base', [text], [-1]).size).toBe(0); // never cached
    expect(primeCounts('o200k_base', [text], [1, 2]).size).toBe(0); // lengths differ: nothing cached
    expect(uncachedPieces(call, 'o200k_base')).toEqual([text]);
    expect(countPromptTokens(call, 'o200k_base', OPTS)).toBe(want);
    // counts given for this call are used (no fresh count needed), and only within it
    clearCountCache();
    const given = new Map([[text, want - 3 - 1 - 3]]); // the text's own tokens ('user' is one)
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, 0, given)).toBe(want);
    expect(countPromptTokensWithin(call, 'o200k_base', OPTS, 0)).toBeUndefined();
  });
});
