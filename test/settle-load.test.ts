/**
 * The response phase under load, end to end: 4 tollgate replicas on one Valkey, 2,000 concurrent
 * check + settle pairs over real gRPC (Check as Envoy asks it, the ext_proc stream as Envoy plays it in
 * observability mode). Each call is checked on a random replica and settled on another, with a random
 * actual usage (below and above its reservation). Afterwards every budget holds exactly capacity minus
 * what the admitted calls really used: the daily token quota and dollar quota exactly, the rolling
 * bucket within the refill of the run; the request count is untouched by settlement; no slot is held.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chat } from './helpers/envoy.js';
import { chatJson } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp, waitFor } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const TENANTS = 8;
const PAIRS = 2000;
const TOKENS = 150_000; // per tenant and day: tight enough that some calls are denied
const ROLLING = 2_000_000; // per tenant, 30 days: refill during the run is a few units
const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    price_usd_per_1m: { input: 2, output: 8, cached_input: 1 }
limits:
  - { name: day, per: tenant, tokens: ${TOKENS}, reset: daily }
  - { name: spend, per: tenant, usd: 1000, reset: monthly }
  - { name: roll, per: tenant, tokens: ${ROLLING}, every: 30d }
  - { name: reqs, per: tenant, requests: 100000, reset: daily }
  - { name: slots, per: tenant, concurrent: 100000, lease: 10m }
`;
const JSON_HEADERS = { 'content-type': 'application/json' };

let vk: TestValkey;
const apps: SettleApp[] = [];

beforeAll(async () => {
  vk = await startValkey();
  for (let i = 0; i < 4; i++) apps.push(await startSettleApp(CONFIG, { valkeyUrl: vk.url }));
}, 60_000);
afterAll(async () => {
  for (const a of apps) await a.close();
  await vk?.close();
});

/** A seeded PRNG (mulberry32): the run is the same every time. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('4 replicas, 2,000 concurrent check + settle pairs (real gRPC, real Valkey)', () => {
  it('leave every budget exactly at capacity minus what the admitted calls used', async () => {
    const rand = rng(21);
    const run = `load${Date.now()}`;
    const used = new Map<string, { tokens: number; micros: number; calls: number }>();
    let admitted = 0;
    let denied = 0;
    const pair = async (i: number) => {
      const tenant = `${run}-${i % TENANTS}`;
      const maxTokens = 100 + Math.floor(rand() * 1900);
      // actual output 0..120% of max_tokens (some calls use more than they reserved)
      const output = Math.floor(rand() * maxTokens * 1.2);
      const prompt = 5 + Math.floor(rand() * 50); // the provider's count (may differ from ours)
      const cached = rand() < 0.3 ? Math.floor(prompt / 2) : 0;
      const checker = apps[Math.floor(rand() * 4)];
      const settler = apps[Math.floor(rand() * 4)];
      // (a generous client deadline: 2,000 calls at once on a small shared machine)
      const a = await checker.envoy.check(
        { headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o', `call ${i}`, { max_tokens: maxTokens }) },
        60_000,
      );
      if (!a.allowed) {
        denied++;
        return;
      }
      admitted++;
      const ev = await settler.settle(
        { id: a.reservation, headers: JSON_HEADERS, chunks: [chatJson(prompt, output, cached)] },
        30_000,
      );
      expect(ev?.outcome).toBe('settled');
      const u = used.get(tenant) ?? { tokens: 0, micros: 0, calls: 0 };
      u.tokens += prompt + output;
      // micro-dollars, rounded up: cached prompt at $1, the rest at $2, output at $8 per 1M
      u.micros += Math.ceil(((prompt - cached) * 2_000_000 + cached * 1_000_000 + output * 8_000_000) / 1e6);
      u.calls++;
      used.set(tenant, u);
    };
    const t0 = Date.now();
    await Promise.all(Array.from({ length: PAIRS }, (_, i) => pair(i)));
    const seconds = (Date.now() - t0) / 1000;
    expect(admitted + denied).toBe(PAIRS);
    expect(admitted).toBeGreaterThan(PAIRS / 4);
    expect(denied).toBeGreaterThan(0); // the quota bound some calls
    for (const [tenant, u] of used) {
      const hget = (k: string, f: string) => vk.client.hget(k, f).then(Number);
      expect(await hget(`tollgate:c:day:daily:${tenant}`, 'u')).toBe(u.tokens);
      expect(await hget(`tollgate:c:spend:monthly:${tenant}`, 'u')).toBe(u.micros);
      expect(await hget(`tollgate:c:reqs:daily:${tenant}`, 'u')).toBe(u.calls); // settlement leaves requests alone
      const level = await hget(`tollgate:r:roll:${tenant}`, 'v');
      const refill = (ROLLING * (seconds + 5) * 1000) / (30 * 86_400_000);
      expect(level).toBeGreaterThanOrEqual(ROLLING - u.tokens);
      expect(level).toBeLessThanOrEqual(ROLLING - u.tokens + refill);
      expect(await vk.client.zcard(`tollgate:s:slots:${tenant}`)).toBe(0);
    }
    // every settlement event arrived; nothing settled twice
    const events = await waitFor(() => {
      const all = apps.flatMap((a) => a.events);
      return all.length >= admitted ? all : undefined;
    });
    expect(events?.filter((e) => e.outcome === 'settled')).toHaveLength(admitted);
    console.log(
      `[settle-load] ${PAIRS} pairs on 4 replicas in ${seconds.toFixed(1)} s: ${admitted} admitted and settled, ${denied} denied`,
    );
  }, 180_000);
});
