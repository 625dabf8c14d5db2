/**
 * The core decision path end to end: a real gRPC client speaking Envoy's CheckRequest to the real
 * server, backed by a real valkey-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getEncoder } from '../src/tokens/encoders.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
    - api_key: true
  team:
    - header: x-team-id
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00 }
    fallback: gpt-4o-mini
  gpt-4o-mini:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.15, output: 0.60 }
  "*":
    encoding: cl100k_base
    default_max_output_tokens: 1024
    price_usd_per_1m: { input: 15, output: 60 }
limits:
  - name: tenant-requests
    per: tenant
    requests: 60
    every: 1m
  - name: tenant-tokens
    per: tenant
    tokens: 30000
    every: 1m
  - name: gpt-4o-tokens
    per: tenant
    models: [gpt-4o]
    tokens: 100000
    every: 1h
  - name: team-spend
    per: team
    usd: 50
    reset: daily
`;

let vk: TestValkey;
let app: TestApp;
let envoy: EnvoyClient;
let n = 0;
const tenant = () => `t${Date.now()}-${++n}`;

beforeAll(async () => {
  vk = await startValkey();
  app = await startTestApp(CONFIG, { valkeyUrl: vk.url });
  envoy = new EnvoyClient(app.grpcPort);
});
afterAll(async () => {
  envoy?.close();
  await app?.close(1000);
  await vk?.close();
});

describe('allow', () => {
  it('allows a chat call and reports the remaining budget in response headers', async () => {
    const t = tenant();
    const content = 'Hello, how are you today?';
    const a = await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o-mini', content, { max_tokens: 100 }),
    });
    expect(a.allowed).toBe(true);
    expect(a.code).toBe(0);
    const prompt = getEncoder('o200k_base').encode(content).length + 3 + 4; // message overhead + reply priming
    expect(a.headers['x-ratelimit-limit-tokens']).toBe('30000');
    expect(a.headers['x-ratelimit-remaining-tokens']).toBe(String(30000 - prompt - 100));
    expect(a.headers['x-ratelimit-limit-requests']).toBe('60');
    expect(a.headers['x-ratelimit-remaining-requests']).toBe('59');
    expect(a.headers['x-ratelimit-reset-requests']).toMatch(/^\d+(ms|s)$/);
    // unsuffixed: the limit with the smallest remaining share (requests: 59/60 vs tokens)
    expect(a.headers['x-ratelimit-limit']).toBe('60');
    expect(Number(a.headers['x-ratelimit-reset'])).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
    // headers for the client's response never overwrite the provider's own (ADD_IF_ABSENT);
    // upstream request headers, if any, overwrite (docs/envoy-and-istio.md, "Response headers")
    expect(new Set(a.raw.ok_response.response_headers_to_add.map((h: any) => h.append_action))).toEqual(
      new Set(['ADD_IF_ABSENT']),
    );
    for (const h of a.raw.ok_response.headers ?? [])
      expect(h.append_action).toBe('OVERWRITE_IF_EXISTS_OR_ADD');
    // the debit is in Valkey under the prefix
    const keys = await vk.client.keys('tollgate:*');
    expect(keys).toContain(`tollgate:r:tenant-tokens:${t}`);
    expect(Number(await vk.client.hget(`tollgate:r:tenant-tokens:${t}`, 'v'))).toBe(30000 - prompt - 100);
  });

  it('accepts the body as the string field too (pack_as_bytes off)', async () => {
    const a = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o', 'hi'),
      asString: true,
    });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-ratelimit-remaining-requests']).toBe('59');
  });

  it('removes client-sent x-tollgate-* headers before upstream', async () => {
    const a = await envoy.check({
      headers: { 'x-tenant-id': tenant(), 'x-tollgate-model': 'gpt-4o', 'x-tollgate-degraded': 'x' },
      body: chat('gpt-4o-mini', 'hi'),
    });
    expect(a.allowed).toBe(true);
    expect(a.removed.sort()).toEqual(['x-tollgate-degraded', 'x-tollgate-model']);
    expect(a.upstream['x-tollgate-model']).toBeUndefined();
  });

  it('identifies tenants by hashed API key; the raw key is never stored', async () => {
    const key = `sk-test-${Date.now()}-secret`;
    const a = await envoy.check({
      headers: { authorization: `Bearer ${key}` },
      body: chat('gpt-4o-mini', 'hi'),
    });
    expect(a.allowed).toBe(true);
    const keys = await vk.client.keys('*');
    expect(keys.some((k) => k.includes(key))).toBe(false);
    expect(keys.some((k) => /tollgate:r:tenant-requests:key_[0-9a-f]{32}$/.test(k))).toBe(true);
    expect(app.logs.join('').includes(key)).toBe(false);
  });

  it('Azure deployment paths take the model from the path', async () => {
    const t = tenant();
    for (let i = 0; i < 2; i++) {
      const a = await envoy.check({
        path: '/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01',
        headers: { 'x-tenant-id': t },
        body: { messages: [{ role: 'user', content: 'hi' }], max_tokens: 40000 },
      });
      // gpt-4o-tokens (100k/h) fits, tenant-tokens (30k/min) does not: 40000 > 30000 can never fit
      expect(a.allowed).toBe(false);
      expect(a.json.limit).toBe('tenant-tokens');
    }
  });
});

describe('deny', () => {
  it('exhausting the request limit answers 429 with every header and an OpenAI error body', async () => {
    const t = tenant();
    const t0 = Date.now();
    const ask = () =>
      envoy.check({ headers: { 'x-tenant-id': t }, body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }) });
    let admitted = 0;
    let d = await ask();
    while (d.allowed && admitted < 200) {
      admitted++;
      d = await ask();
    }
    // 60 at once, plus what refilled (1 per second) while a loaded machine sent them
    expect(admitted).toBeGreaterThanOrEqual(60);
    expect(admitted).toBeLessThanOrEqual(60 + Math.ceil((Date.now() - t0) / 1000));
    expect(d.allowed).toBe(false);
    expect(d.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(d.httpStatus).toBe(429);
    const h = d.headers;
    expect(h['content-type']).toBe('application/json');
    const retry = Number(h['retry-after']);
    const retryMs = Number(h['retry-after-ms']);
    // one request at 60/min refills in ~1 s
    expect(retry).toBe(1);
    // (less than a full second when the 60 calls above took a while: the bucket kept refilling)
    expect(retryMs).toBeGreaterThan(0);
    expect(retryMs).toBeLessThanOrEqual(1000);
    expect(h['x-ratelimit-limit']).toBe('60');
    expect(h['x-ratelimit-remaining']).toBe('0');
    expect(Number(h['x-ratelimit-reset'])).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000));
    expect(h['x-ratelimit-limit-requests']).toBe('60');
    expect(h['x-ratelimit-remaining-requests']).toBe('0');
    expect(h['x-ratelimit-reset-requests']).toMatch(/^\d+ms$|^1s$/);
    expect(h['x-ratelimit-limit-tokens']).toBe('30000');
    expect(h['x-ratelimit-remaining-tokens']).toBeDefined();
    expect(h['x-ratelimit-reset-tokens']).toBeDefined();
    expect(d.json).toMatchObject({
      error: { type: 'requests', code: 'rate_limit_exceeded', param: null },
      retry_after_seconds: 1,
      limit: 'tenant-requests',
    });
    expect(d.json.error.message).toContain('tenant-requests');
    expect(new Set(d.appendActions)).toEqual(new Set(['OVERWRITE_IF_EXISTS_OR_ADD']));
  });

  it('Retry-After is close to the true refill time', async () => {
    const t = tenant();
    // spend 29,000 of 30,000 tokens/min, then ask for 3,000: 2,000 missing → 4 s at 500 tokens/s
    const big = await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o-mini', 'x', { max_tokens: 29000 - 8 }),
    });
    expect(big.allowed).toBe(true);
    expect(big.headers['x-ratelimit-remaining-tokens']).toBe('1000');
    const d = await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o-mini', 'x', { max_tokens: 3000 - 8 }),
    });
    expect(d.allowed).toBe(false);
    expect(d.json.limit).toBe('tenant-tokens');
    const ms = Number(d.headers['retry-after-ms']);
    expect(ms).toBeGreaterThan(3800);
    expect(ms).toBeLessThanOrEqual(4000);
    expect(d.headers['retry-after']).toBe('4');
  });

  it('a denied call leaves no partial debit (all-or-nothing)', async () => {
    const t = tenant();
    await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o-mini', 'x', { max_tokens: 29000 - 8 }),
    });
    const before = await vk.client.hgetall(`tollgate:r:tenant-requests:${t}`);
    const d = await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o-mini', 'x', { max_tokens: 5000 }),
    });
    expect(d.allowed).toBe(false);
    const after = await vk.client.hgetall(`tollgate:r:tenant-requests:${t}`);
    expect(after).toEqual(before); // the request limit fit but was not debited
  });

  it('a call that can never fit says so, with x-should-retry: false', async () => {
    const d = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o-mini', 'x', { max_tokens: 50000 }),
    });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(429);
    expect(d.headers['x-should-retry']).toBe('false');
    expect(d.headers['retry-after']).toBeUndefined();
    expect(d.json.error.message).toContain('can never fit');
    expect(d.json.limit).toBe('tenant-tokens');
  });

  it('200 concurrent checks against one limit admit exactly the limit', async () => {
    // A limit that does not refill noticeably during the burst: 100 per hour.
    const other = await startTestApp(
      'limits:\n  - { name: hourly, per: tenant, requests: 100, every: 1h }\n  - { name: tokens, per: tenant, tokens: 1000000, every: 1h }\n',
      { valkeyUrl: vk.url },
    );
    const c = new EnvoyClient(other.grpcPort);
    try {
      const t = tenant();
      const results = await Promise.all(
        Array.from({ length: 200 }, () =>
          c.check({ headers: { 'x-tenant-id': t }, body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }) }),
        ),
      );
      const admitted = results.filter((r) => r.allowed);
      if (admitted.some((r) => r.headers['x-tollgate-degraded']))
        console.log(
          other.logs.filter((l) => !l.includes('"decision"')).join(''),
          other.logs.slice(0, 3).join(''),
        );
      expect(admitted.filter((r) => r.headers['x-tollgate-degraded'])).toEqual([]);
      expect(admitted.length).toBe(100);
      expect(results.filter((r) => !r.allowed).every((r) => r.httpStatus === 429)).toBe(true);
      // Valkey's state matches: 100 debited, nothing more
      expect(Math.round(Number(await vk.client.hget(`tollgate:r:hourly:${t}`, 'v')))).toBe(0);
    } finally {
      c.close();
      await other.close(1000);
    }
  });
});

describe('dollars and calendar quota', () => {
  it('team spend is priced in integer micro-dollars and resets at the UTC day boundary', async () => {
    const team = `team-${Date.now()}`;
    // gpt-4o: 1,000,000 output tokens would be $10; use max_tokens 90000 on "*" model? use gpt-4o-mini:
    // prompt p tokens at $0.15/M + 20000 output at $0.60/M
    const body = chat('gpt-4o-mini', 'hello', { max_tokens: 20000 });
    const a = await envoy.check({ headers: { 'x-tenant-id': tenant(), 'x-team-id': team }, body });
    expect(a.allowed).toBe(true);
    const key = `tollgate:c:team-spend:daily:${team}`;
    const used = Number(await vk.client.hget(key, 'u'));
    const p = getEncoder('o200k_base').encode('hello').length + 7;
    expect(used).toBe(Math.ceil(((p * 0.15 + 20000 * 0.6) * 1e6) / 1e6)); // micro-dollars
    const end = Number(await vk.client.hget(key, 'e'));
    const midnight = Date.UTC(
      new Date().getUTCFullYear(),
      new Date().getUTCMonth(),
      new Date().getUTCDate() + 1,
    );
    expect(end).toBe(midnight);
    // exhaust the $50 budget directly, then cross the boundary
    await vk.client.hset(key, 'u', String(50_000_000));
    const d = await envoy.check({ headers: { 'x-tenant-id': tenant(), 'x-team-id': team }, body });
    expect(d.allowed).toBe(false);
    expect(d.json.limit).toBe('team-spend');
    expect(d.json.error.type).toBe('usd');
    expect(Number(d.headers['retry-after'])).toBe(Math.ceil((midnight - Date.now()) / 1000));
    await vk.client.hset(key, 'e', String(Date.now() - 1));
    const after = await envoy.check({ headers: { 'x-tenant-id': tenant(), 'x-team-id': team }, body });
    expect(after.allowed).toBe(true);
  });
});

describe('fallback reroute', () => {
  it('routes to the fallback model when the preferred one is out of budget', async () => {
    const t = tenant();
    // spend gpt-4o-tokens (100k/h) with large calls that fit the 30k/min tenant limit? 100k > 30k/min, so
    // set the state directly: the gpt-4o bucket is empty
    await vk.client.hset(`tollgate:r:gpt-4o-tokens:${t}`, 'v', '0', 't', String(Date.now()));
    await vk.client.pexpire(`tollgate:r:gpt-4o-tokens:${t}`, 3_600_000);
    const a = await envoy.check({
      headers: { 'x-tenant-id': t },
      body: chat('gpt-4o', 'hello', { max_tokens: 10 }),
    });
    expect(a.allowed).toBe(true);
    expect(a.upstream['x-tollgate-model']).toBe('gpt-4o-mini');
    expect(a.upstream['x-tollgate-rerouted-from']).toBe('gpt-4o');
    expect(a.headers['x-tollgate-model']).toBe('gpt-4o-mini');
    expect(a.headers['x-tollgate-rerouted-from']).toBe('gpt-4o');
    // exactly one debit: the gpt-4o bucket untouched, tenant limits debited once
    expect(Number(await vk.client.hget(`tollgate:r:gpt-4o-tokens:${t}`, 'v'))).toBeLessThan(100);
    expect(await vk.client.hget(`tollgate:r:tenant-requests:${t}`, 'v')).toBe('59');
  });
});

describe('bad input is answered, never crashes', () => {
  it('invalid JSON → 400 JSON error', async () => {
    const d = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: '{"model": "gpt-4o", "messages": [',
    });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(400);
    expect(d.code).toBe(3);
    expect(d.json.error.code).toBe('invalid_request');
    expect(d.headers['content-type']).toBe('application/json');
  });

  it('a JSON non-object → 400', async () => {
    for (const body of ['[1,2,3]', '"hello"', '42', 'null']) {
      const d = await envoy.check({ headers: { 'x-tenant-id': tenant() }, body });
      expect(d.httpStatus).toBe(400);
    }
  });

  it('wrong field types → 400 naming the field', async () => {
    const d = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: { model: 'gpt-4o', messages: 'hi' },
    });
    expect(d.httpStatus).toBe(400);
    expect(d.json.error.message).toContain('messages');
    const m = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o', 'x', { max_tokens: -5 }),
    });
    expect(m.httpStatus).toBe(400);
  });

  it('a partial body is estimated from content-length and marked', async () => {
    const t = tenant();
    const full = JSON.stringify(chat('gpt-4o-mini', 'y'.repeat(4000)));
    const a = await envoy.check({
      headers: { 'x-tenant-id': t, 'content-length': String(full.length) },
      body: full.slice(0, 1000),
      partial: true,
    });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBe('true');
    expect(a.upstream['x-tollgate-estimated']).toBe('true');
    // estimated prompt = ceil(bytes / 4); model read from the partial body (gpt-4o-mini inherits 1024 default output)
    const used = 30000 - Number(a.headers['x-ratelimit-remaining-tokens']);
    expect(used).toBe(Math.ceil(full.length / 4) + 1024);
  });

  it('a missing body is estimated from content-length', async () => {
    const a = await envoy.check({ headers: { 'x-tenant-id': tenant(), 'content-length': '4000' } });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBe('true');
    expect(30000 - Number(a.headers['x-ratelimit-remaining-tokens'])).toBe(1000 + 1024);
  });

  it('non-LLM paths are allowed without accounting', async () => {
    const before = (await vk.client.keys('tollgate:*')).length;
    const a = await envoy.check({ path: '/v1/models', method: 'GET' });
    expect(a.allowed).toBe(true);
    expect(a.headers).toEqual({});
    expect((await vk.client.keys('tollgate:*')).length).toBe(before);
  });

  it('bodies over 4 MiB are accepted (gRPC receive limit raised)', async () => {
    const content = 'word '.repeat(1_000_000); // 5 MB
    const a = await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o-mini', content, { max_tokens: 1 }),
    });
    // ~1M tokens can never fit 30k tokens/min: a clear answer, not an RPC error
    expect(a.allowed).toBe(false);
    expect(a.headers['x-should-retry']).toBe('false');
  });

  it('logs never contain prompt text', async () => {
    const secret = `PROMPT-SECRET-${Date.now()}`;
    await envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o-mini', secret, { max_tokens: 99999 }),
    });
    await envoy.check({ headers: { 'x-tenant-id': tenant() }, body: chat('gpt-4o-mini', secret) });
    expect(app.logs.length).toBeGreaterThan(0);
    expect(app.logs.join('').includes(secret)).toBe(false);
  });
});

describe('Valkey scripts', () => {
  it('recovers from SCRIPT FLUSH', async () => {
    await vk.client.script('FLUSH');
    const a = await envoy.check({ headers: { 'x-tenant-id': tenant() }, body: chat('gpt-4o-mini', 'hi') });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-ratelimit-remaining-requests']).toBe('59');
    expect(a.headers['x-tollgate-degraded']).toBeUndefined();
  });
});
