/**
 * The answer cache end to end (docs/cache.md): a real gRPC Check (Envoy's ext_authz protos), the
 * response played to tollgate's ext_proc with Envoy's official protos, then a later Check answered from
 * the cache — on the memory store and on a real Valkey.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { purgeCommand } from '../src/cache/purge.js';
import { parseSse } from '../src/cache/reassemble.js';
import { parseConfigText } from '../src/config/load.js';
import { type CheckAnswer, chat } from './helpers/envoy.js';
import { anthropicSse, chatJson, chatSse } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp, waitFor } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const BASE = `
identity:
  tenant:
    - header: x-tenant-id
models:
  gpt-4o: { encoding: o200k_base, price_usd_per_1m: { input: 2.5, output: 10 } }
  claude-sonnet-4: { encoding: o200k_base, price_usd_per_1m: { input: 3, output: 15 } }
  "*": { encoding: o200k_base, default_max_output_tokens: 256 }
`;
const LIMITS = `
limits:
  - { name: one, per: tenant, requests: 1, every: 1h }
`;
const cacheCfg = (prefix: string, extra = '') => `${BASE}${LIMITS}
store: { prefix: ${prefix} }
cache:
  ttl: 1h
  max_entry_bytes: 64kb
  max_bytes: 1mb${extra}
`;

let n = 0;
const uid = (p: string) => `${p}${Date.now().toString(36)}${n++}`;
const JSON_H = { 'content-type': 'application/json' };
const SSE_H = { 'content-type': 'text/event-stream' };

async function fills(s: SettleApp): Promise<number> {
  const m = await s.app.metrics.cache.fills.get();
  return m.values.filter((v) => v.labels.result === 'stored').reduce((a, v) => a + v.value, 0);
}

/** A check that is allowed, then its response played through ext_proc, then the fill awaited. */
async function callAndFill(
  s: SettleApp,
  headers: Record<string, string>,
  body: unknown,
  response: { headers: Record<string, string>; chunks: string[] },
  path = '/v1/chat/completions',
): Promise<void> {
  const before = await fills(s);
  const a = await s.envoy.check({ path, headers, body });
  expect(a.allowed).toBe(true);
  const e = await s.settle({ id: a.reservation!, status: 200, ...response });
  expect(e?.outcome).toBe('settled');
  await waitFor(async () => undefined);
  const until = Date.now() + 3000;
  while ((await fills(s)) === before && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
}

/** A fetch that answers what the Check answered (Envoy sends denied_response to the client as is). */
const replay = (a: CheckAnswer) => async () =>
  new Response(a.body, { status: a.httpStatus, headers: a.headers });

function expectCached(a: CheckAnswer, tier = 'exact') {
  expect(a.allowed).toBe(false);
  expect(a.httpStatus).toBe(200);
  expect(a.headers['x-tollgate-source']).toBe('cache');
  expect(a.headers['x-tollgate-cache']).toBe(tier);
}

const modes: [string, () => Promise<TestValkey | undefined>][] = [
  ['memory', async () => undefined],
  ['valkey', () => startValkey()],
];

describe.each(modes)('answer cache on %s', (mode, start) => {
  let vk: TestValkey | undefined;
  const apps: SettleApp[] = [];
  beforeAll(async () => {
    vk = await start();
  }, 30_000);
  afterAll(async () => {
    for (const a of apps) await a.close();
    await vk?.close();
  });
  const app = async (yaml: string) => {
    const s = await startSettleApp(yaml, vk ? { valkeyUrl: vk.url } : {});
    apps.push(s);
    return s;
  };

  it('fills from a JSON answer and serves it as JSON with rate-limit headers once the budget is spent', async () => {
    const s = await app(cacheCfg(uid('c')));
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'What is the capital of France?', { temperature: 0 });
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(10, 3, 0, 'Paris.')] });
    const a = await s.envoy.check({ headers: h, body: { ...body, user: 'someone-else-id' } });
    expectCached(a);
    expect(a.headers['content-type']).toBe('application/json');
    expect(a.json.choices[0].message.content).toBe('Paris.');
    expect(a.headers['x-ratelimit-limit-requests']).toBe('1');
    expect(a.headers['x-ratelimit-remaining-requests']).toBe('0');
    // a different question is not answered from the cache: the 429 stands
    const other = await s.envoy.check({
      headers: h,
      body: chat('gpt-4o', 'And of Spain?', { temperature: 0 }),
    });
    expect(other.httpStatus).toBe(429);
  });

  it('fills from an SSE answer (reassembled) and serves it as SSE to stream: true and as JSON otherwise', async () => {
    const s = await app(cacheCfg(uid('c')));
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Count to three.', { stream: true });
    const sse = chatSse(['one, ', 'two, ', 'three'], { prompt: 9, output: 5 });
    await callAndFill(s, h, body, { headers: SSE_H, chunks: [sse.slice(0, 50), sse.slice(50)] });
    const streamed = await s.envoy.check({ headers: h, body });
    expectCached(streamed);
    expect(streamed.headers['content-type']).toBe('text/event-stream');
    const events = parseSse(streamed.body!);
    expect(events.at(-1)!.data).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(text).toBe('one, two, three');
    expect(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason).toBe('stop');
    // the official SDK's stream parser reads the served events
    const sdk = new OpenAI({ apiKey: 'k', baseURL: 'http://cache.invalid/v1', fetch: replay(streamed) });
    const parts: string[] = [];
    for await (const c of await sdk.chat.completions.create({ model: 'gpt-4o', messages: [], stream: true }))
      parts.push(c.choices[0]?.delta?.content ?? '');
    expect(parts.join('')).toBe('one, two, three');
    const plain = await s.envoy.check({ headers: h, body: { ...body, stream: false } });
    expectCached(plain);
    expect(plain.json.object).toBe('chat.completion');
    expect(plain.json.choices[0].message.content).toBe('one, two, three');
  });

  it('serves an Anthropic answer as Anthropic SSE events', async () => {
    const s = await app(cacheCfg(uid('c')));
    const h = { 'x-tenant-id': uid('t') };
    const body = {
      model: 'claude-sonnet-4',
      max_tokens: 100,
      stream: true,
      messages: [{ role: 'user', content: 'Hi' }],
    };
    await callAndFill(
      s,
      h,
      body,
      { headers: SSE_H, chunks: [anthropicSse(['Hel', 'lo!'], 5, 2)] },
      '/v1/messages',
    );
    const a = await s.envoy.check({ path: '/v1/messages', headers: h, body });
    expectCached(a);
    const events = parseSse(a.body!);
    expect(events.map((e) => e.event)).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(JSON.parse(events[2].data).delta.text).toBe('Hello!');
    const sdk = new Anthropic({ apiKey: 'k', baseURL: 'http://cache.invalid', fetch: replay(a) });
    const msg = await sdk.messages
      .stream({ model: 'claude-sonnet-4', max_tokens: 100, messages: [] })
      .finalMessage();
    expect(msg.content).toHaveLength(1);
    expect(msg.content[0]).toMatchObject({ type: 'text', text: 'Hello!' });
    expect(msg.stop_reason).toBe('end_turn');
  });

  it('tenant B never gets tenant A’s answer', async () => {
    const s = await app(cacheCfg(uid('c')));
    const body = chat('gpt-4o', 'A secret question of tenant A');
    await callAndFill(s, { 'x-tenant-id': 'acme-a' }, body, {
      headers: JSON_H,
      chunks: [chatJson(5, 1, 0, 'A only')],
    });
    const b1 = await s.envoy.check({ headers: { 'x-tenant-id': 'acme-b' }, body });
    expect(b1.allowed).toBe(true); // B's own budget: goes upstream
    const b2 = await s.envoy.check({ headers: { 'x-tenant-id': 'acme-b' }, body });
    expect(b2.httpStatus).toBe(429); // B's budget spent, and A's answer is not B's
  });

  it('unidentified callers (tenant "anonymous") never share answers: not filled, not served', async () => {
    const s = await app(cacheCfg(uid('c')));
    const body = chat('gpt-4o', 'Who am I?');
    const a = await s.envoy.check({ headers: {}, body });
    expect(a.allowed).toBe(true);
    await s.settle({ id: a.reservation!, status: 200, headers: JSON_H, chunks: [chatJson(5, 1)] });
    await new Promise((r) => setTimeout(r, 100));
    expect(await fills(s)).toBe(0);
    expect((await s.envoy.check({ headers: {}, body })).httpStatus).toBe(429);
  });

  it('cache-control: no-store fills nothing; no-cache skips serving', async () => {
    const s = await app(cacheCfg(uid('c')));
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Do not keep this');
    const a = await s.envoy.check({ headers: { ...h, 'cache-control': 'no-store' }, body });
    expect(a.allowed).toBe(true);
    await s.settle({ id: a.reservation!, status: 200, headers: JSON_H, chunks: [chatJson(5, 1)] });
    await new Promise((r) => setTimeout(r, 100));
    expect((await s.envoy.check({ headers: h, body })).httpStatus).toBe(429);

    const h2 = { 'x-tenant-id': uid('t') };
    await callAndFill(s, h2, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
    expect((await s.envoy.check({ headers: { ...h2, 'cache-control': 'no-cache' }, body })).httpStatus).toBe(
      429,
    );
    expectCached(await s.envoy.check({ headers: h2, body }));
  });

  it('answers expire (ttl), and errors or cut streams are never filled', async () => {
    const s = await app(cacheCfg(uid('c')).replace('ttl: 1h', 'ttl: 1s'));
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Short-lived');
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
    expectCached(await s.envoy.check({ headers: h, body }));
    await new Promise((r) => setTimeout(r, 1200));
    expect((await s.envoy.check({ headers: h, body })).httpStatus).toBe(429);

    const h2 = { 'x-tenant-id': uid('t') };
    const err = await s.envoy.check({ headers: h2, body });
    await s.settle({ id: err.reservation!, status: 500, headers: JSON_H, chunks: [chatJson(5, 1)] });
    const h3 = { 'x-tenant-id': uid('t') };
    const cut = await s.envoy.check({ headers: h3, body: { ...body, stream: true } });
    await s.settle({
      id: cut.reservation!,
      status: 200,
      headers: SSE_H,
      chunks: [chatSse(['x']).slice(0, 120)],
      complete: false,
    });
    await new Promise((r) => setTimeout(r, 100));
    expect((await s.envoy.check({ headers: h2, body })).httpStatus).toBe(429);
    expect((await s.envoy.check({ headers: h3, body })).httpStatus).toBe(429);
  });

  it('tier order: a fallback model that fits wins over the cache', async () => {
    const prefix = uid('c');
    const yaml = `${BASE.replace('gpt-4o: { encoding', 'gpt-4o: { fallback: gpt-4o-mini, encoding')}
  gpt-4o-mini: { encoding: o200k_base, price_usd_per_1m: { input: 0.15, output: 0.6 } }
limits:
  - { name: one, per: tenant, models: [gpt-4o], requests: 1, every: 1h }
store: { prefix: ${prefix} }
cache: { ttl: 1h }
`;
    const s = await app(yaml);
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Fallback first');
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
    const a = await s.envoy.check({ headers: h, body });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-model']).toBe('gpt-4o-mini');
  });

  it('serve: always answers from the cache before the store call, debiting nothing', async () => {
    const s = await app(`${BASE}
limits:
  - { name: ten, per: tenant, requests: 10, every: 1h }
store: { prefix: ${uid('c')} }
cache: { serve: always }
`);
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Always cached');
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
    for (let i = 0; i < 3; i++) expectCached(await s.envoy.check({ headers: h, body }));
    const fresh = await s.envoy.check({ headers: h, body: chat('gpt-4o', 'Not cached') });
    expect(fresh.headers['x-ratelimit-remaining-requests']).toBe('8');
  });

  it('charge: requests counts a hit against request limits only', async () => {
    const s = await app(`${BASE}
limits:
  - { name: three, per: tenant, requests: 3, every: 1h }
  - { name: tok, per: tenant, tokens: 20, every: 1h }
store: { prefix: ${uid('c')} }
cache: { charge: requests }
`);
    const h = { 'x-tenant-id': uid('t') };
    const body = chat('gpt-4o', 'Charged', { max_tokens: 1 });
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(15, 1)] });
    // tokens are spent (20 per hour): served from the cache, each hit counting one request
    const a = await s.envoy.check({ headers: h, body: { ...body, max_tokens: 100 } });
    expect(a.httpStatus).toBe(429); // a different request (max_tokens) is a different key
    const b = await s.envoy.check({ headers: h, body });
    expectCached(b);
    expect(b.headers['x-ratelimit-remaining-requests']).toBe('1');
    expectCached(await s.envoy.check({ headers: h, body }));
    expect((await s.envoy.check({ headers: h, body })).httpStatus).toBe(429);
  });

  // (the queue tier and the purge CLI need Valkey: these two exist on the Valkey run only)
  if (mode === 'valkey')
    it('cache before queue: a call the cache answers is not queued', async () => {
      const s = await app(`${BASE}
queues:
  overflow: { max_length: 100 }
limits:
  - { name: one, per: tenant, requests: 1, every: 1h, when_exhausted: queue }
store: { prefix: ${uid('c')} }
cache: { ttl: 1h }
`);
      const h = { 'x-tenant-id': uid('t') };
      const body = chat('gpt-4o', 'Queue or cache?');
      await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
      expectCached(await s.envoy.check({ headers: h, body }));
      const other = await s.envoy.check({ headers: h, body: chat('gpt-4o', 'Not cached: queued') });
      expect(other.httpStatus).toBe(202);
    });

  if (mode === 'valkey')
    it('tollgate cache purge --scope tenant=acme drops that scope only; bytes per scope kind are exported', async () => {
      const prefix = uid('c');
      const s = await app(cacheCfg(prefix));
      const body = chat('gpt-4o', 'Purge me');
      const acme = { 'x-tenant-id': `acme${prefix}` };
      const other = { 'x-tenant-id': `other${prefix}` };
      await callAndFill(s, acme, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
      await callAndFill(s, other, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
      const metrics = await s.app.metrics.registry.metrics();
      const line = metrics.split('\n').find((l) => l.startsWith('tollgate_cache_bytes{scope_kind="tenant"}'));
      expect(Number(line?.split(' ')[1])).toBeGreaterThan(0);
      let out = '';
      const code = await purgeCommand(['--scope', `tenant=acme${prefix}`, '--json'], {
        loadConfig: () => parseConfigText(cacheCfg(prefix)),
        valkeyUrl: vk!.url,
        usage: (p) => {
          throw new Error(p);
        },
        write: (t) => {
          out += t;
        },
      });
      expect(code).toBe(0);
      expect(JSON.parse(out).entries).toBe(0); // the default prefix: nothing there
      out = '';
      await purgeCommand(['--scope', `tenant=acme${prefix}`, '--config', 'x.yaml', '--json'], {
        loadConfig: () => parseConfigText(cacheCfg(prefix)),
        valkeyUrl: vk!.url,
        usage: (p) => {
          throw new Error(p);
        },
        write: (t) => {
          out += t;
        },
      });
      expect(JSON.parse(out).entries).toBe(1);
      expect((await s.envoy.check({ headers: acme, body })).httpStatus).toBe(429);
      expectCached(await s.envoy.check({ headers: other, body }));
    });

  it('the admin API purges a scope: POST /v1/cache/purge {"scope": {"tenant": …}}', async () => {
    const prefix = uid('c');
    const yaml = cacheCfg(prefix).replace('store: {', 'server: { admin: { port: 0 } }\nstore: {');
    const s = await startSettleApp(yaml, {
      ...(vk ? { valkeyUrl: vk.url } : {}),
      adminToken: 'secret-token-123456',
    });
    apps.push(s);
    const body = chat('gpt-4o', 'Purge me through the admin API');
    const h = { 'x-tenant-id': `acme${prefix}` };
    await callAndFill(s, h, body, { headers: JSON_H, chunks: [chatJson(5, 1)] });
    expectCached(await s.envoy.check({ headers: h, body }));
    const res = await fetch(`http://127.0.0.1:${s.app.adminPort}/v1/cache/purge`, {
      method: 'POST',
      headers: { authorization: 'Bearer secret-token-123456', 'content-type': 'application/json' },
      body: JSON.stringify({ scope: { tenant: `acme${prefix}` } }),
    });
    expect(res.status).toBe(200);
    expect((await res.json()).entries).toBe(1);
    expect((await s.envoy.check({ headers: h, body })).httpStatus).toBe(429);
  });
});
