/**
 * The admin API (src/admin/) on a real tollgate, on real Valkey and on the in-memory store: usage equals
 * what a real Check's headers said, credits and resets show in the next Check, the token is required,
 * and the admin paths exist on the admin listener only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const TOKEN = 'admin-test-token-7f3a9c';
const YAML = `
identity:
  tenant: [{ header: x-tenant-id }]
  team: [{ header: x-team-id }]
models:
  gpt-x: { price_usd_per_1m: { input: 1, output: 2 } }
  gpt-y: { price_usd_per_1m: { input: 1, output: 2 } }
  "*": { price_usd_per_1m: { input: 1, output: 2 } }
limits:
  - { name: daily-tokens, per: tenant, tokens: 10000, reset: daily }
  - { name: hourly-requests, per: tenant, requests: 100, every: 1h }
  - { name: team-spend, per: [tenant, team], usd: 5, reset: monthly }
  - { name: inflight, per: tenant, concurrent: 3 }
  - { name: model-requests, per: [tenant, model], requests: 1000, reset: daily }
server:
  admin: { port: 0 }
`;

let vk: TestValkey;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});

const auth = { authorization: `Bearer ${TOKEN}` };

describe.each(['valkey', 'memory'] as const)('admin API on the %s store', (kind) => {
  let app: TestApp;
  let client: EnvoyClient;
  let base: string;
  beforeAll(async () => {
    app = await startTestApp(YAML, {
      adminToken: TOKEN,
      ...(kind === 'valkey' ? { valkeyUrl: vk.url } : {}),
    });
    client = new EnvoyClient(app.grpcPort);
    base = `http://127.0.0.1:${app.adminPort}`;
  });
  afterAll(async () => {
    client?.close();
    await app?.close(500);
  });

  const usage = async (q: string) => {
    const res = await fetch(`${base}/v1/usage?${q}`, { headers: auth });
    expect(res.status).toBe(200);
    return (await res.json()) as any;
  };
  const post = (path: string, body: unknown, headers: Record<string, string> = auth) =>
    fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const row = (u: any, name: string) => u.limits.find((l: any) => l.limit === name);
  const call = (tenant: string) =>
    client.check({
      headers: { 'x-tenant-id': tenant },
      body: chat('gpt-x', 'hello there', { max_tokens: 3000 }),
    });

  it('usage equals what the last Check said in its headers (and debits nothing)', async () => {
    const tenant = `u-${kind}-${Date.now()}`;
    const a = await call(tenant);
    expect(a.allowed).toBe(true);
    const u = await usage(`tenant=${tenant}`);
    expect(u.store).toBe(kind);
    expect(u.model).toBeNull();
    const tokens = row(u, 'daily-tokens');
    expect(tokens).toMatchObject({ kind: 'tokens', unit: 'tokens', capacity: 10000, scope: { tenant } });
    expect(tokens.window).toEqual({ type: 'calendar', reset: 'daily', timezone: 'UTC' });
    expect(String(tokens.remaining)).toBe(a.headers['x-ratelimit-remaining-tokens']);
    expect(String(tokens.capacity)).toBe(a.headers['x-ratelimit-limit-tokens']);
    expect(tokens.used).toBe(10000 - tokens.remaining);
    // X-RateLimit-* describe the tightest limit (least share left): its reset is the same instant
    const tightest = u.limits.reduce((x: any, y: any) =>
      y.remaining / y.capacity < x.remaining / x.capacity ? y : x,
    );
    expect(String(tightest.remaining)).toBe(a.headers['x-ratelimit-remaining']);
    // (epoch seconds, read a moment apart: the two may straddle a second)
    expect(Math.abs(tightest.reset - Number(a.headers['x-ratelimit-reset']))).toBeLessThanOrEqual(1);
    const requests = row(u, 'hourly-requests');
    expect(requests.window).toEqual({ type: 'rolling', every_ms: 3_600_000 });
    expect(String(requests.remaining)).toBe(a.headers['x-ratelimit-remaining-requests']);
    expect(requests.remaining).toBe(99);
    expect(row(u, 'inflight')).toMatchObject({ unit: 'calls', capacity: 3, used: 1, remaining: 2 });
    // team-spend needs a team: it does not apply to this identity
    expect(row(u, 'team-spend')).toBeUndefined();
    expect(row(await usage(`tenant=${tenant}&team=search`), 'team-spend')).toMatchObject({
      unit: 'micro_usd',
      capacity: 5_000_000,
      scope: { tenant, team: 'search' },
    });
    // a per-model limit: one row per configured model, or the one asked about
    expect(u.limits.filter((l: any) => l.limit === 'model-requests').map((l: any) => l.scope.model)).toEqual([
      'gpt-x',
      'gpt-y',
    ]);
    const one = await usage(`tenant=${tenant}&model=gpt-x`);
    expect(one.model).toBe('gpt-x');
    expect(one.limits.filter((l: any) => l.limit === 'model-requests')).toMatchObject([
      { scope: { tenant, model: 'gpt-x' }, used: 1, remaining: 999 },
    ]);
    expect(row(await usage(`tenant=${tenant}&model=gpt-y`), 'model-requests').used).toBe(0);
    // nothing was debited by reading
    const again = await usage(`tenant=${tenant}`);
    expect(row(again, 'daily-tokens').remaining).toBe(tokens.remaining);
    expect(row(again, 'hourly-requests').remaining).toBe(99);
    const next = await call(tenant);
    expect(Number(next.headers['x-ratelimit-remaining-tokens'])).toBe(2 * tokens.remaining - 10000);
  });

  it('a credit and a reset are visible in the next Check', async () => {
    const tenant = `c-${kind}-${Date.now()}`;
    const first = await call(tenant);
    const left = Number(first.headers['x-ratelimit-remaining-tokens']);
    const cost = 10000 - left;
    const credit = await post('/v1/credits', { limit: 'daily-tokens', scope: { tenant }, amount: 3000 });
    expect(credit.status).toBe(200);
    const report = await credit.json();
    expect(report).toMatchObject({ op: 'credit', units: 3000, remaining: left + 3000 });
    expect(report.reset).toBe(row(await usage(`tenant=${tenant}`), 'daily-tokens').reset); // the window's end
    const second = await call(tenant);
    expect(Number(second.headers['x-ratelimit-remaining-tokens'])).toBe(left + 3000 - cost);
    // a calendar credit may take "used" below zero: extra budget for this window
    const big = await post('/v1/credits', { limit: 'daily-tokens', scope: { tenant }, amount: 50000 });
    expect((await big.json()).remaining).toBe(left + 3000 - cost + 50000);
    expect(row(await usage(`tenant=${tenant}`), 'daily-tokens').used).toBeLessThan(0);
    const reset = await post('/v1/reset', { limit: 'daily-tokens', scope: { tenant } });
    expect(await reset.json()).toMatchObject({ op: 'reset', remaining: 10000 });
    const third = await call(tenant);
    expect(Number(third.headers['x-ratelimit-remaining-tokens'])).toBe(10000 - cost);
    // a concurrency limit's reset releases every slot (no ext_proc here: the three calls hold theirs)
    expect(row(await usage(`tenant=${tenant}`), 'inflight').used).toBe(3);
    await post('/v1/reset', { limit: 'inflight', scope: { tenant } });
    expect(row(await usage(`tenant=${tenant}`), 'inflight').used).toBe(0);
    // a rolling bucket's credit is capped at its capacity
    const rpm = await post('/v1/credits', { limit: 'hourly-requests', scope: { tenant }, amount: 50 });
    expect((await rpm.json()).remaining).toBe(100);
    expect((await call(tenant)).headers['x-ratelimit-remaining-requests']).toBe('99');
    // usd amounts are dollars
    const usd = await post('/v1/credits', { limit: 'team-spend', scope: { tenant, team: 'a' }, amount: 2.5 });
    expect(await usd.json()).toMatchObject({ units: 2_500_000, unit: 'micro_usd', remaining: 7_500_000 });
  });

  it('each write logs one audit line: who (token digest prefix), what, scope, amount; never the token', async () => {
    const tenant = `a-${kind}-${Date.now()}`;
    await post('/v1/credits', { limit: 'daily-tokens', scope: { tenant }, amount: 7 });
    const lines = app.logs.filter((l) => l.includes('"audit":true') && l.includes(tenant));
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]);
    expect(line).toMatchObject({ action: 'credit', limit: 'daily-tokens', scope: { tenant }, amount: 7 });
    expect(line.who).toMatch(/^token:[0-9a-f]{12}$/);
    expect(app.logs.join('')).not.toContain(TOKEN);
  });

  it('refuses unknown limits (404), incomplete scopes and bad amounts (400)', async () => {
    const unknown = await post('/v1/credits', { limit: 'nope', scope: { tenant: 't' }, amount: 1 });
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error.code).toBe('limit_not_found');
    const partial = await post('/v1/credits', { limit: 'team-spend', scope: { tenant: 't' }, amount: 1 });
    expect(partial.status).toBe(400);
    expect((await partial.json()).error.message).toMatch(/missing "team"/);
    for (const amount of [0, -5, 'lots', null, 1.5]) {
      const bad = await post('/v1/credits', { limit: 'daily-tokens', scope: { tenant: 't' }, amount });
      expect(bad.status, String(amount)).toBe(400);
      expect((await bad.json()).error.code).toBe('invalid_amount');
    }
    const credit = await post('/v1/credits', { limit: 'inflight', scope: { tenant: 't' }, amount: 1 });
    expect(credit.status).toBe(400);
    const notJson = await fetch(`${base}/v1/reset`, { method: 'POST', headers: auth, body: '{' });
    expect(notJson.status).toBe(400);
  });

  it('needs the token: none or a wrong one is a 401 JSON error, on every path', async () => {
    for (const headers of [
      {},
      { authorization: 'Bearer wrong' },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: TOKEN },
    ]) {
      for (const [method, path] of [
        ['GET', '/v1/usage?tenant=t'],
        ['POST', '/v1/credits'],
        ['GET', '/other'],
      ]) {
        const res = await fetch(`${base}${path}`, {
          method,
          headers,
          body: method === 'POST' ? '{}' : undefined,
        });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect((await res.json()).error.code).toBe('unauthorized');
      }
    }
    expect((await fetch(`${base}/v1/usage`, { method: 'DELETE', headers: auth })).status).toBe(405);
  });

  it('the admin paths are not on the metrics port or the gRPC port', async () => {
    const metrics = await fetch(`http://127.0.0.1:${app.httpPort}/v1/usage?tenant=t`, { headers: auth });
    expect(metrics.status).toBe(404);
    const credit = await fetch(`http://127.0.0.1:${app.httpPort}/v1/credits`, {
      method: 'POST',
      headers: auth,
      body: '{}',
    });
    expect(credit.status).toBe(404);
    const grpc = await fetch(`http://127.0.0.1:${app.grpcPort}/v1/usage?tenant=t`, { headers: auth }).then(
      (r) => r.status,
      () => 'refused',
    );
    expect(grpc).not.toBe(200);
  });
});

describe('admin listener configuration', () => {
  it('is off unless configured, binds 127.0.0.1 by default, and needs a port of its own', () => {
    expect(parseConfigText('limits: []\n').server.admin).toBeUndefined();
    expect(parseConfigText('server:\n  admin: { port: 8183 }\n').server.admin).toEqual({
      port: 8183,
      host: '127.0.0.1',
    });
    expect(() => parseConfigText('server:\n  admin: { port: 8181 }\n')).toThrow(/admin.port/);
  });

  it('refuses to start without TOLLGATE_ADMIN_TOKEN, saying so', async () => {
    await expect(startTestApp(YAML, { adminToken: '' })).rejects.toThrow(/TOLLGATE_ADMIN_TOKEN/);
  });
});
