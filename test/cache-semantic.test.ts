/**
 * The answer cache's semantic tier end to end (docs/cache.md): a local OpenAI-compatible embedder with
 * deterministic vectors; a paraphrase is served (x-tollgate-cache: semantic;similarity=…), a different
 * question is not, and a slow or dead embedder never delays the decision past decision_deadline — on
 * the memory store and on a real Valkey.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scopeFromPairs } from '../src/cache/key.js';
import { bucketOf, normalize } from '../src/cache/lsh.js';
import { embedText, startEmbedder, type TestEmbedder } from './helpers/embedder.js';
import { chat } from './helpers/envoy.js';
import { chatJson } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let n = 0;
const uid = (p: string) => `${p}${Date.now().toString(36)}${n++}`;
const JSON_H = { 'content-type': 'application/json' };

const config = (prefix: string, url: string, deadline = '2s') => `
identity:
  tenant:
    - header: x-tenant-id
models:
  gpt-4o: { encoding: o200k_base, price_usd_per_1m: { input: 2.5, output: 10 } }
limits:
  - { name: one, per: tenant, requests: 1, every: 1h }
server: { decision_deadline: ${deadline} }
store: { prefix: ${prefix}, timeout: 100ms }
cache:
  ttl: 1h
  semantic:
    embeddings: { url: "${url}", model: test-embed, timeout: 500ms }
    threshold: 0.9
`;

const SYSTEM = { role: 'system', content: 'You answer geography questions in one word.' };
const ask = (q: string) => chat('gpt-4o', q, { messages: [SYSTEM, { role: 'user', content: q }] });

async function stored(s: SettleApp): Promise<number> {
  const m = await s.app.metrics.cache.fills.get();
  return m.values.filter((v) => v.labels.result === 'stored').reduce((a, v) => a + v.value, 0);
}

async function fill(s: SettleApp, emb: TestEmbedder, h: Record<string, string>, body: unknown, text: string) {
  const before = await stored(s);
  const calls = emb.calls;
  const a = await s.envoy.check({ headers: h, body });
  expect(a.allowed).toBe(true);
  await s.settle({ id: a.reservation!, status: 200, headers: JSON_H, chunks: [chatJson(9, 1, 0, text)] });
  const until = Date.now() + 3000;
  while (((await stored(s)) === before || emb.calls === calls) && Date.now() < until)
    await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50)); // the vector is written after the embedding
}

const modes: [string, () => Promise<TestValkey | undefined>][] = [
  ['memory', async () => undefined],
  ['valkey', () => startValkey()],
];

describe.each(modes)('semantic tier on %s', (_mode, start) => {
  let vk: TestValkey | undefined;
  let emb: TestEmbedder;
  const apps: SettleApp[] = [];
  beforeAll(async () => {
    vk = await start();
    emb = await startEmbedder();
  }, 30_000);
  afterAll(async () => {
    for (const a of apps) await a.close();
    await emb.close();
    await vk?.close();
  });
  const app = async (yaml: string) => {
    const s = await startSettleApp(yaml, vk ? { valkeyUrl: vk.url } : {});
    apps.push(s);
    return s;
  };

  it('a paraphrase is served from the cache; a different question is not', async () => {
    emb.delayMs = 0;
    const s = await app(config(uid('s'), emb.url));
    const h = { 'x-tenant-id': uid('t') };
    await fill(s, emb, h, ask('What is the capital of France?'), 'Paris');
    const para = await s.envoy.check({ headers: h, body: ask('Tell me the capital city of France, please') });
    expect(para.httpStatus).toBe(200);
    expect(para.headers['x-tollgate-source']).toBe('cache');
    expect(para.headers['x-tollgate-cache']).toMatch(/^semantic;similarity=(0\.9\d|1\.00)$/);
    expect(para.json.choices[0].message.content).toBe('Paris');
    const other = await s.envoy.check({ headers: h, body: ask('What is the capital of Spain?') });
    expect(other.httpStatus).toBe(429);
    // another system prompt is another family: never compared
    const sys = await s.envoy.check({
      headers: h,
      body: chat('gpt-4o', '', {
        messages: [
          { role: 'system', content: 'Answer in French.' },
          { role: 'user', content: 'What is the capital of France?' },
        ],
      }),
    });
    expect(sys.httpStatus).toBe(429);
  });

  it('a slow embedder: the decision still comes within decision_deadline, as the 429', async () => {
    emb.delayMs = 0;
    const s = await app(config(uid('s'), emb.url, '150ms'));
    const h = { 'x-tenant-id': uid('t') };
    await fill(s, emb, h, ask('What is the capital of Italy?'), 'Rome');
    emb.delayMs = 1000;
    const t0 = performance.now();
    const a = await s.envoy.check({ headers: h, body: ask('Tell me the capital of Italy') });
    const took = performance.now() - t0;
    emb.delayMs = 0;
    expect(a.httpStatus).toBe(429);
    expect(took).toBeLessThan(400); // 150 ms deadline + a loaded machine's slack
  });

  it('a dead embedder: falls through to the deny at once', async () => {
    const s = await app(config(uid('s'), 'http://127.0.0.1:9/v1/embeddings', '150ms'));
    const h = { 'x-tenant-id': uid('t') };
    const first = await s.envoy.check({ headers: h, body: ask('What is the capital of Peru?') });
    expect(first.allowed).toBe(true);
    const t0 = performance.now();
    const a = await s.envoy.check({ headers: h, body: ask('Tell me the capital of Peru') });
    expect(a.httpStatus).toBe(429);
    expect(performance.now() - t0).toBeLessThan(400);
  });

  it('purging a scope drops its answers and its vectors', async () => {
    emb.delayMs = 0;
    const s = await app(config(uid('s'), emb.url));
    const t = uid('t');
    const h = { 'x-tenant-id': t };
    await fill(s, emb, h, ask('What is the capital of Chile?'), 'Santiago');
    const store = s.app.decider.cache!.store;
    const scope = scopeFromPairs([`tenant=${t}`]).id;
    const bucket = bucketOf(normalize(embedText('What is the capital of Chile?')));
    const family = s.app.decider.cache!.query(
      s.app.decider.config.cache!,
      { tenant: t },
      'openai.chat',
      'gpt-4o',
      JSON.stringify(ask('x')),
      {},
    )!.ref.f!;
    expect(await store.vectors(scope, family, [bucket], 10)).toHaveLength(1);
    expect((await store.purge(scope)).entries).toBe(1);
    expect(await store.vectors(scope, family, [bucket], 10)).toHaveLength(0);
    expect((await s.envoy.check({ headers: h, body: ask('Tell me the capital of Chile') })).httpStatus).toBe(
      429,
    );
  });
});
