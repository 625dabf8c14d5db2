/**
 * Issue 19, item 6: every random API key used to create state. identity.unknown_keys (own | shared |
 * deny) with a key map; a source_ip identity source for per-client limits (Envoy's
 * attributes.source.address, or the right hop of x-forwarded-for); a bounded in-memory store that only
 * ever evicts keys whose state equals no state, and counts what it evicts and what it refuses.
 * Real gRPC Checks built from Envoy's official protos, real Valkey.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { startTestApp, type TestApp, valkeyApps } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { officialCheck } from './helpers/official.js';

const { vk, serve } = valkeyApps();
const memoryApps: TestApp[] = [];
afterAll(async () => {
  for (const a of memoryApps) await a.close(100);
});

const KNOWN = 'sk-known-tenant-key';
const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** A config file with a key map that knows KNOWN; loaded through loadConfig (as `serve` does). */
function keyMapConfig(unknownKeys: string, prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-unknown-keys-'));
  writeFileSync(join(dir, 'keys.yaml'), `keys:\n  ${sha(KNOWN)}: { org: acme }\n`);
  const file = join(dir, 'tollgate.yaml');
  writeFileSync(
    file,
    `identity:
  key_map: keys.yaml
  unknown_keys: ${unknownKeys}
  tenant:
    - api_key: true
    - header: x-tenant-id
limits:
  - { name: per-tenant, per: tenant, requests: 2, every: 1h }
store: { prefix: ${prefix} }
`,
  );
  const config = loadConfig(file);
  config.server.decisionDeadlineMs = 2000;
  config.store.timeoutMs = 1000;
  Object.assign(config.server, { grpcHost: '127.0.0.1', grpcPort: 0, httpPort: 0 });
  return config;
}

const call = (port: number, headers: Record<string, string>, sourceAddress?: string) =>
  officialCheck(port, { headers, body: chat('gpt-4o-mini', 'hi'), sourceAddress });
const bearer = (k: string) => ({ authorization: `Bearer ${k}` });
/** Limit keys under `prefix` (reservation records, `<prefix>:v:<id>`, are one per allowed call). */
const keysUnder = async (prefix: string) =>
  (await vk().client.keys(`${prefix}:*`)).filter((k) => !k.startsWith(`${prefix}:v:`)).length;

describe('identity.unknown_keys', () => {
  it('deny: an unknown key gets 401 (JSON) and creates no state; a known key and a keyless call are decided', async () => {
    const prefix = `uk-deny-${Date.now()}`;
    const { app } = await serve('', { config: keyMapConfig('deny', prefix) });
    for (let i = 0; i < 20; i++) {
      const r = await call(app.grpcPort, bearer(`sk-random-${i}-${Math.random()}`));
      expect(r.allowed).toBe(false);
      expect(r.status).toBe(401);
      expect(r.json.error).toMatchObject({ code: 'invalid_api_key', type: 'invalid_request_error' });
      expect(r.raw.denied_response.body).not.toContain('sk-random'); // the key is never echoed
    }
    expect(await keysUnder(prefix)).toBe(0); // 20 made-up keys: no Valkey key at all
    const known = await call(app.grpcPort, bearer(KNOWN));
    expect(known.allowed).toBe(true);
    expect(known.headers['x-ratelimit-remaining-requests']).toBe('1');
    const keyless = await call(app.grpcPort, { 'x-tenant-id': 'no-key' });
    expect(keyless.allowed).toBe(true);
    expect(await keysUnder(prefix)).toBe(2);
    expect(app.logs.join('')).not.toContain('sk-random');
  });

  it('shared: every unknown key spends one bucket; a known key keeps its own', async () => {
    const prefix = `uk-shared-${Date.now()}`;
    const { app } = await serve('', { config: keyMapConfig('shared', prefix) });
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await call(app.grpcPort, bearer(`sk-made-up-${i}`)));
    expect(answers.map((a) => a.allowed)).toEqual([true, true, false, false, false]); // 2 per hour, shared
    expect(answers[2].status).toBe(429);
    expect(await keysUnder(prefix)).toBe(1); // one bucket for five keys
    const known = await call(app.grpcPort, bearer(KNOWN));
    expect(known.allowed).toBe(true);
    expect(known.headers['x-ratelimit-remaining-requests']).toBe('1');
  });

  it('own (the default) keeps one bucket per key; unknown_keys without a key map is refused', async () => {
    const prefix = `uk-own-${Date.now()}`;
    const { app } = await serve('', { config: keyMapConfig('own', prefix) });
    for (let i = 0; i < 3; i++) expect((await call(app.grpcPort, bearer(`sk-own-${i}`))).allowed).toBe(true);
    expect(await keysUnder(prefix)).toBe(3);
    await expect(
      startTestApp('identity:\n  unknown_keys: deny\n  tenant: [{ api_key: true }]\n'),
    ).rejects.toThrow(/identity\.unknown_keys: only valid with identity\.key_map/);
  });
});

describe('source_ip: a per-client limit that rotating API keys cannot escape', () => {
  it('envoy: attributes.source.address from the CheckRequest', async () => {
    const { app } = await serve(`
identity:
  tenant: [{ api_key: true }]
  client: [{ source_ip: envoy }]
limits:
  - { name: per-client, per: client, requests: 3, every: 1h }
store: { prefix: sip-envoy-${Date.now()} }
`);
    const from = (ip: string, i: number) => call(app.grpcPort, bearer(`sk-rotating-${ip}-${i}`), ip);
    const a = [];
    for (let i = 0; i < 4; i++) a.push(await from('203.0.113.9', i));
    expect(a.map((x) => x.allowed)).toEqual([true, true, true, false]);
    expect(a[3].json.limit).toBe('per-client');
    // the same client as an IPv4-mapped IPv6 address is the same client
    expect((await from('::ffff:203.0.113.9', 9)).allowed).toBe(false);
    expect((await from('198.51.100.4', 0)).allowed).toBe(true); // another client
    // IPv6: one client holds a /64, so its addresses are one client (source_ip's default ipv6_prefix)
    const v6 = [];
    for (let i = 1; i <= 4; i++) v6.push(await from(`2001:db8:aa:bb::${i.toString(16)}`, i));
    expect(v6.map((x) => x.allowed)).toEqual([true, true, true, false]);
    expect((await from('2001:DB8:AA:BB:0:0:0:99', 9)).allowed).toBe(false); // another spelling, same /64
    expect((await from('2001:db8:aa:cc::1', 0)).allowed).toBe(true); // another /64
  });

  it('ipv6_prefix: 128 counts each IPv6 address on its own (one spelling per address)', async () => {
    const { app } = await serve(`
identity:
  client: [{ source_ip: { ipv6_prefix: 128 } }]
limits:
  - { name: per-address, per: client, requests: 1, every: 1h }
store: { prefix: sip-v6-${Date.now()} }
`);
    const from = (ip: string) => call(app.grpcPort, {}, ip);
    expect((await from('2001:db8::1')).allowed).toBe(true);
    expect((await from('2001:db8:0:0::1')).allowed).toBe(false); // the same address
    expect((await from('2001:db8::2')).allowed).toBe(true);
  });

  it('x-forwarded-for: the hop the trusted proxy wrote; what the client wrote to its left is ignored', async () => {
    const { app } = await serve(`
identity:
  client: [{ source_ip: { xff_trusted_hops: 1 } }, { default: no-client-ip }]
limits:
  - { name: per-client, per: client, requests: 2, every: 1h }
store: { prefix: sip-xff-${Date.now()} }
`);
    const xff = (v: string) => call(app.grpcPort, { 'x-forwarded-for': v });
    const a = [];
    // client-chosen garbage on the left, the load balancer's entry (client IP) then Envoy's (LB IP)
    for (let i = 0; i < 3; i++) a.push(await xff(`10.${i}.0.1, spoof-${i}, 192.0.2.50, 10.0.0.2`));
    expect(a.map((x) => x.allowed)).toEqual([true, true, false]);
    expect((await xff('192.0.2.51, 10.0.0.2')).allowed).toBe(true); // another client
    // fewer hops than trusted: no value, so the next source (one shared default bucket)
    expect((await xff('10.0.0.2')).allowed).toBe(true);
    expect((await xff('not-an-ip, 10.0.0.2')).allowed).toBe(true);
    expect((await xff('10.0.0.2')).allowed).toBe(false);
  });
});

describe('the in-memory store is bounded', () => {
  const scrape = async (app: TestApp, name: string) => {
    const text = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
    return Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? 'NaN');
  };

  it('at store.memory_max_keys no spend is forgotten: new keys are refused (per on_store_failure, counted), busy tenants stay limited', async () => {
    const app = await startTestApp(`
store: { memory_max_keys: 100 }
limits:
  - { name: hourly, per: tenant, requests: 1, every: 1h }
`);
    memoryApps.push(app);
    for (let i = 0; i < 100; i++)
      expect((await call(app.grpcPort, { 'x-tenant-id': `t${i}` })).allowed).toBe(true);
    const spent = await call(app.grpcPort, { 'x-tenant-id': 't0' });
    expect(spent.status).toBe(429);
    // a new tenant: no room and nothing evictable (every bucket holds spend) → on_store_failure: allow
    const fresh = await call(app.grpcPort, { 'x-tenant-id': 'newcomer' });
    expect(fresh.allowed).toBe(true);
    expect(fresh.raw.ok_response.headers.map((h: any) => [h.header.key, h.header.value])).toContainEqual([
      'x-tollgate-degraded',
      'store-full',
    ]);
    // the busy tenants were not evicted to make room: still denied
    for (const t of ['t0', 't50', 't99'])
      expect((await call(app.grpcPort, { 'x-tenant-id': t })).status, t).toBe(429);
    expect(await scrape(app, 'tollgate_memory_store_keys')).toBe(100);
    expect(await scrape(app, 'tollgate_memory_store_full_total')).toBe(1);
    expect(await scrape(app, 'tollgate_memory_store_evictions_total')).toBe(0);
  });

  it('keys whose bucket is full again are evicted at the bound (counted), a spent one is kept; under deny, a refusal is a 503', async () => {
    const app = await startTestApp(`
store: { memory_max_keys: 100, on_store_failure: deny }
limits:
  - { name: fast, per: tenant, requests: 10, every: 30s }
`);
    memoryApps.push(app);
    const bulk = new EnvoyClient(app.grpcPort); // one connection: quick fills
    const send = (t: string) =>
      bulk.check({ headers: { 'x-tenant-id': t }, body: chat('gpt-4o-mini', 'hi') });
    for (let i = 0; i < 10; i++) expect((await send('spender')).allowed).toBe(true); // its whole budget
    const filled = await Promise.all(Array.from({ length: 99 }, (_, i) => send(`f${i}`))); // 1 of 10 each
    bulk.close();
    expect(filled.every((a) => a.allowed)).toBe(true);
    expect((await call(app.grpcPort, { 'x-tenant-id': 'late' })).status).toBe(503); // full, nothing free
    // 3.1 s later the 99 one-call buckets have refilled (1 request per 3 s): worth nothing, evictable;
    // the spender's bucket holds ~1 of 10: kept
    await new Promise((r) => setTimeout(r, 3100));
    const later = await call(app.grpcPort, { 'x-tenant-id': 'later' });
    expect(later.allowed).toBe(true);
    expect(later.headers['x-tollgate-degraded']).toBeUndefined();
    expect(later.headers['x-ratelimit-remaining-requests']).toBe('9');
    const spender = await call(app.grpcPort, { 'x-tenant-id': 'spender' });
    expect(spender.allowed).toBe(true);
    expect(spender.headers['x-ratelimit-remaining-requests']).toBe('0'); // not a fresh bucket (that says 9)
    expect(await scrape(app, 'tollgate_memory_store_evictions_total')).toBe(99);
    expect(await scrape(app, 'tollgate_memory_store_full_total')).toBe(1);
  });
});
