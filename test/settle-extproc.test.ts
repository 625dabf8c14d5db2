/**
 * The response phase end to end: a real gRPC Check (Envoy's ext_authz), then the response played to
 * tollgate's ext_proc with Envoy's official protos, on the memory store and a real Valkey. Budgets are
 * read back through the next Check's x-ratelimit-* headers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chat, type EnvoyClient } from './helpers/envoy.js';
import { playExtProc } from './helpers/ext-proc.js';
import { chatJson, chatSse } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const MODELS = `
identity:
  tenant:
    - header: x-tenant-id
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00, cached_input: 1.25 }
  "*":
    encoding: o200k_base
    default_max_output_tokens: 1024
    price_usd_per_1m: { input: 15, output: 60 }
`;
const TOKENS = `${MODELS}
limits:
  - { name: reqs, per: tenant, requests: 1000, reset: daily }
  - { name: tok, per: tenant, tokens: 1000000, reset: daily }
settle:
  reservation_ttl: 1m
`;
const USD = `${MODELS}
limits:
  - { name: spend, per: tenant, usd: 100, reset: daily }
`;
const KEEP_PROMPT = `${TOKENS}
  on_upstream_error: keep_prompt
`;
const KEEP_WITHOUT_USAGE = `${TOKENS}
  without_usage: keep
`;
const SLOTS = `${MODELS}
limits:
  - { name: slots, per: tenant, concurrent: 2, lease: 2s }
`;
const SHORT_TTL = `${MODELS}
limits:
  - { name: tok, per: tenant, tokens: 1000000, reset: daily }
settle:
  reservation_ttl: 1s
`;

let n = 0;
const tenant = () => `t${Date.now()}-${++n}`;

const JSON_HEADERS = { 'content-type': 'application/json' };

async function allowed(envoy: EnvoyClient, t: string, extra: Record<string, unknown> = {}) {
  const a = await envoy.check({
    headers: { 'x-tenant-id': t },
    body: chat('gpt-4o', 'Say hello to the whole wide world, please.', { max_tokens: 4096, ...extra }),
  });
  expect(a.allowed).toBe(true);
  expect(a.reservation).toMatch(/^[0-9a-z]+\.[A-Za-z0-9_-]{22}$/);
  expect(a.upstream['x-tollgate-reservation']).toBe(a.reservation);
  return a;
}

const num = (h: Record<string, string>, k: string) => Number(h[k]);

const backends: [string, () => string | undefined][] = [];
let vk: TestValkey | undefined;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});
backends.push(['memory', () => undefined], ['valkey', () => vk!.url]);

describe.each(backends)('settle over ext_proc (%s store)', (_name, url) => {
  const apps: SettleApp[] = [];
  const start = async (yaml: string) => {
    const s = await startSettleApp(yaml, { valkeyUrl: url() });
    apps.push(s);
    return s;
  };
  afterAll(async () => {
    for (const a of apps) await a.close();
  });

  it('a call reserving 4096 output tokens that used 300 is charged prompt + 300', async () => {
    const s = await start(TOKENS);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    expect(reserved).toBeGreaterThan(4096);
    const ev = await s.settle({ id: a.reservation, headers: JSON_HEADERS, chunks: [chatJson(17, 300)] });
    expect(ev?.outcome).toBe('settled');
    expect(ev?.settlement?.tokens).toMatchObject({ prompt: 17, output: 300 });
    const b = await allowed(s.envoy, t);
    // remaining = capacity − (prompt + 300) − the second call's own reservation
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - (17 + 300) - reserved);
    expect(num(b.headers, 'x-ratelimit-remaining-requests')).toBe(1000 - 2);
  });

  it('dollars: each kind of token at its own price (cached input at cached_input)', async () => {
    const s = await start(USD);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const ev = await s.settle({
      id: a.reservation,
      headers: JSON_HEADERS,
      chunks: [chatJson(1000, 300, 600)],
    });
    expect(ev?.outcome).toBe('settled');
    // 400 × 2.50 + 600 × 1.25 + 300 × 10.00 per 1M = 1000 + 750 + 3000 micro-dollars
    expect(ev?.settlement?.micros).toBe(4750);
    expect(ev?.remaining).toEqual([100_000_000 - 4750]);
    expect(ev!.settlement!.reservedMicros).toBeGreaterThan(4096 * 10);
  });

  it('upstream 500: tokens refunded in full, the request count stays', async () => {
    const s = await start(TOKENS);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    const ev = await s.settle({
      id: a.reservation,
      status: 500,
      headers: JSON_HEADERS,
      chunks: ['{"error":{"message":"boom"}}'],
    });
    expect(ev?.outcome).toBe('upstream_error');
    const b = await allowed(s.envoy, t);
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - reserved);
    expect(num(b.headers, 'x-ratelimit-remaining-requests')).toBe(1000 - 2);
  });

  it('upstream 429 with on_upstream_error: keep_prompt charges the reserved prompt only', async () => {
    const s = await start(KEEP_PROMPT);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    const ev = await s.settle({ id: a.reservation, status: 429, headers: JSON_HEADERS, chunks: ['{}'] });
    expect(ev?.outcome).toBe('upstream_error');
    const prompt = reserved - 4096;
    expect(ev?.settlement?.tokens.prompt).toBe(prompt);
    const b = await allowed(s.envoy, t);
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - prompt - reserved);
  });

  it('a 2xx answer without usage: counted by default; with without_usage: keep the reservation stands', async () => {
    const sse = { 'content-type': 'text/event-stream' };
    const chunks = [chatSse(['Hello', ' there'])];
    for (const [config, outcome] of [
      [TOKENS, 'estimated'],
      [KEEP_WITHOUT_USAGE, 'kept'],
    ] as const) {
      const s = await start(config);
      const t = tenant();
      const a = await allowed(s.envoy, t, { stream: true });
      const cap = num(a.headers, 'x-ratelimit-limit-tokens');
      const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
      const ev = await s.settle({ id: a.reservation, headers: sse, chunks });
      expect(ev?.outcome).toBe(outcome);
      const b = await allowed(s.envoy, t, { stream: true });
      const left = num(b.headers, 'x-ratelimit-remaining-tokens');
      if (outcome === 'kept') expect(left).toBe(cap - 2 * reserved);
      else expect(left).toBeGreaterThan(cap - 2 * reserved + 4000); // the 4,096 output refunded but a few
    }
  });

  it('a stream cut before anything arrived: the reservation stands (kept)', async () => {
    const s = await start(TOKENS);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    for (const p of [
      { id: a.reservation, via: 'both' as const, noResponse: true, close: 'cancel' as const },
      { id: a.reservation, complete: false, close: 'end' as const },
    ]) {
      const ev = await s.settle(p);
      expect(['kept', 'duplicate']).toContain(ev?.outcome);
    }
    const b = await allowed(s.envoy, t);
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - 2 * reserved);
  });

  it('a second settle of the same id changes nothing (duplicate)', async () => {
    const s = await start(TOKENS);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    const play = { id: a.reservation, headers: JSON_HEADERS, chunks: [chatJson(10, 50)] };
    expect((await s.settle(play))?.outcome).toBe('settled');
    expect((await s.settle({ ...play, chunks: [chatJson(10, 5)] }))?.outcome).toBe('duplicate');
    const b = await allowed(s.envoy, t);
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - 60 - reserved);
  });

  it('unknown, forged and expired ids change nothing and break nothing', async () => {
    const s = await start(SHORT_TTL);
    const t = tenant();
    const a = await allowed(s.envoy, t);
    const cap = num(a.headers, 'x-ratelimit-limit-tokens');
    const reserved = cap - num(a.headers, 'x-ratelimit-remaining-tokens');
    const body = { headers: JSON_HEADERS, chunks: [chatJson(1, 1)] };
    const unknown = `${Date.now().toString(36)}.AAAAAAAAAAAAAAAAAAAAAA`;
    expect((await s.settle({ id: unknown, ...body }))?.outcome).toBe('unmatched');
    expect((await s.settle({ id: 'not-an-id', ...body }))?.outcome).toBe('unmatched');
    expect((await s.settle({ id: 'x'.repeat(10_000), ...body }))?.outcome).toBe('unmatched');
    await new Promise((r) => setTimeout(r, 1300));
    expect((await s.settle({ id: a.reservation, ...body }))?.outcome).toBe('expired');
    const b = await allowed(s.envoy, t);
    expect(num(b.headers, 'x-ratelimit-remaining-tokens')).toBe(cap - 2 * reserved);
    expect(s.app.logs.join('')).toMatch(/"outcome":"expired"/);
    expect(s.app.logs.join('')).not.toContain(a.reservation!);
  });

  it('a stream naming no reservation settles nothing', async () => {
    const s = await start(TOKENS);
    const before = s.events.length;
    await playExtProc(s.app.grpcPort, { headers: JSON_HEADERS, chunks: [chatJson(1, 1)] });
    await new Promise((r) => setTimeout(r, 100));
    expect(s.events.length).toBe(before);
  });

  it('the id from the request header (no metadata forwarding) and from both', async () => {
    const s = await start(TOKENS);
    for (const via of ['header', 'both'] as const) {
      const a = await allowed(s.envoy, tenant());
      const ev = await s.settle({ id: a.reservation, via, headers: JSON_HEADERS, chunks: [chatJson(3, 4)] });
      expect(ev?.outcome).toBe('settled');
      expect(ev?.settlement?.tokens.output).toBe(4);
    }
  });

  it('observability_mode false: each message answered with its empty response; true: none', async () => {
    const s = await start(TOKENS);
    const a = await allowed(s.envoy, tenant());
    const r = await playExtProc(s.app.grpcPort, {
      id: a.reservation,
      via: 'both',
      observability: false,
      headers: JSON_HEADERS,
      chunks: ['{"usage":{"prompt_tokens":2,', '"completion_tokens":3}}'],
    });
    expect(r.kinds).toEqual(['request_headers', 'response_headers', 'response_body', 'response_body']);
    for (const ans of r.answers) {
      const inner = ans[ans.response];
      expect(inner.response ?? {}).toEqual({});
    }
    const b = await allowed(s.envoy, tenant());
    const r2 = await playExtProc(s.app.grpcPort, {
      id: b.reservation,
      headers: JSON_HEADERS,
      chunks: [chatJson(2, 3)],
    });
    expect(r2.answers).toEqual([]);
    await expectEvent(s, a.reservation!, 'settled');
    await expectEvent(s, b.reservation!, 'settled');
  });

  it('concurrency: a third call waits for a slot; settling frees one; an unsettled slot frees after its lease', async () => {
    const s = await start(SLOTS);
    const t = tenant();
    const one = await allowed(s.envoy, t);
    await allowed(s.envoy, t);
    const denied = await s.envoy.check({ headers: { 'x-tenant-id': t }, body: chat('gpt-4o', 'hi') });
    expect(denied.allowed).toBe(false);
    expect(denied.httpStatus).toBe(429);
    expect(Number(denied.headers['retry-after'])).toBeLessThanOrEqual(2);
    expect(denied.json.limit).toBe('slots');
    expect(
      (await s.settle({ id: one.reservation, headers: JSON_HEADERS, chunks: [chatJson(1, 1)] }))?.outcome,
    ).toBe('settled');
    await allowed(s.envoy, t); // the freed slot
    expect((await s.envoy.check({ headers: { 'x-tenant-id': t }, body: chat('gpt-4o', 'hi') })).allowed).toBe(
      false,
    );
    await new Promise((r) => setTimeout(r, 2100));
    await allowed(s.envoy, t); // the leases ran out
  });

  it('with the direct Check path off, ext_proc is served the same', async () => {
    const s = await start(`${TOKENS}\nserver:\n  grpc_direct_check: false\n`);
    const a = await allowed(s.envoy, tenant());
    const ev = await s.settle({ id: a.reservation, headers: JSON_HEADERS, chunks: [chatJson(5, 6)] });
    expect(ev?.outcome).toBe('settled');
  });
});

async function expectEvent(s: SettleApp, id: string, outcome: string) {
  const until = Date.now() + 5000;
  while (Date.now() < until && !s.events.some((e) => e.id === id)) await new Promise((r) => setTimeout(r, 5));
  expect(s.events.find((e) => e.id === id)?.outcome).toBe(outcome);
}
