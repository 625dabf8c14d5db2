/**
 * Large bodies are moved (not copied) to the token worker when they own their ArrayBuffer. If the
 * worker then dies, the bytes are gone: the call is estimated from its size and priced as the
 * costliest configured model (never parsed from a detached buffer, never undercharged). A body that
 * is copied instead is still parsed and counted exactly on the event loop after such a failure.
 * (Exact counts through the moving path on a real server: test/tokens-offload.test.ts.)
 */
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { Decider } from '../src/decision/decide.js';
import { parseBody } from '../src/dialects/body.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { movable, TokenPool } from '../src/offload/pool.js';
import { MemoryStore } from '../src/store/memory.js';
import { countPromptTokens } from '../src/tokens/count.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
// A worker that throws on every parse job (it expects count jobs): the pool sees a crashed worker.
const CRASHING = pathToFileURL(path.join(ROOT, 'test/fixtures/tokens/fake-worker.mjs'));

const cfg = parseConfigText(`
models:
  cheap: { encoding: o200k_base, price_usd_per_1m: { input: 0.1, output: 0.1 } }
  pricey: { encoding: o200k_base, price_usd_per_1m: { input: 10, output: 30 } }
  "*": { encoding: o200k_base, default_max_output_tokens: 10 }
limits:
  - { name: tokens, per: tenant, tokens: 100000000, every: 1h }
server: { decision_deadline: 5s }
store: { timeout: 4s }
`);

const pool = new TokenPool(1, { workerUrl: CRASHING });
const decider = new Decider(cfg, { store: new MemoryStore(Date.now, 1), pool });
afterAll(async () => {
  await decider.close();
  await pool.close();
});

const JSON_BODY = JSON.stringify({
  model: 'cheap',
  max_tokens: 10,
  messages: [{ role: 'user', content: 'tokens are counted here '.repeat(6000) }],
});

const input = (body: Buffer, tenant: string) => ({
  method: 'POST',
  path: '/v1/chat/completions',
  headers: { 'x-tenant-id': tenant, 'content-type': 'application/json' },
  body,
});

describe('moving large bodies to the token worker', () => {
  it('movable(): large bodies that own their buffer, nothing else', () => {
    expect(movable(Buffer.from(JSON_BODY))).toBe(true); // ~144 KB, its own ArrayBuffer
    expect(movable(Buffer.from('{"model":"x"}'))).toBe(false); // small: may share Node's pool
    const inBig = Buffer.concat([Buffer.alloc(200_000), Buffer.from(JSON_BODY)]).subarray(200_000);
    expect(movable(inBig)).toBe(false); // a view into a buffer holding much more
    const shared = new Uint8Array(new SharedArrayBuffer(JSON_BODY.length));
    expect(movable(shared)).toBe(false);
  });

  it('a moved body whose worker dies: estimated from its size, priced as the costliest model', async () => {
    const body = Buffer.from(JSON_BODY);
    const len = body.length;
    const d = await decider.decide(input(body, 'moved'));
    expect(body.byteLength).toBe(0); // the bytes went to the worker
    expect(pool.crashes).toBeGreaterThanOrEqual(1);
    expect(d.kind).toBe('allow');
    expect(d.stats.estimated).toBe(true);
    expect(d.stats.promptTokens).toBe(Math.ceil(len / cfg.server.bytesPerToken));
    expect(d.stats.model).toBe('pricey');
    if (d.kind === 'allow') expect(d.upstreamHeaders['x-tollgate-estimated']).toBe('true');
  });

  it('with a queue tier configured, bodies are copied (a queued call keeps its body)', async () => {
    const withQueue = parseConfigText(`
models:
  cheap: { encoding: o200k_base }
  "*": { encoding: o200k_base, default_max_output_tokens: 10 }
queues:
  batch: { max_length: 100 }
limits:
  - { name: tokens, per: tenant, tokens: 100000000, every: 1h, when_exhausted: queue, queue: batch }
server: { decision_deadline: 5s }
store: { timeout: 4s }
`);
    const d2 = new Decider(withQueue, { store: new MemoryStore(Date.now, 1), pool });
    try {
      const body = Buffer.from(JSON_BODY);
      expect(movable(body)).toBe(true);
      const d = await d2.decide(input(body, 'queued'));
      expect(body.byteLength).toBe(JSON_BODY.length); // not moved
      expect(d.kind).toBe('allow');
      expect(d.stats.estimated).toBeUndefined(); // the worker died, the copy's original was parsed here
    } finally {
      await d2.close();
    }
  });

  it('a copied body whose worker dies is parsed and counted exactly here', async () => {
    const body = Buffer.concat([Buffer.alloc(200_000), Buffer.from(JSON_BODY)]).subarray(200_000);
    const crashesBefore = pool.crashes;
    const d = await decider.decide(input(body, 'copied'));
    expect(pool.crashes).toBeGreaterThan(crashesBefore); // the worker was asked and died
    expect(body.byteLength).toBe(JSON_BODY.length); // still ours
    const p = parseBody('openai.chat', JSON_BODY);
    if (isParseError(p)) throw new Error(p.error);
    expect(d.kind).toBe('allow');
    expect(d.stats.estimated).toBeUndefined();
    expect(d.stats.model).toBe('cheap');
    expect(d.stats.promptTokens).toBe(countPromptTokens(p as ParsedCall, 'o200k_base', { imageTokens: 765 }));
  });
});
