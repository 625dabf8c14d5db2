/**
 * Two replicas on one Valkey: a call checked on A settles on B (the ext_proc stream may reach any
 * replica). A's deny cache needs no clearing by B: a deny is reused at most 1 s, so B's refund is seen
 * by A within 1 s; A's own settlement forgets A's cached denies at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chat } from './helpers/envoy.js';
import { chatJson } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    price_usd_per_1m: { input: 1, output: 4 }
limits:
  - { name: tok, per: tenant, tokens: 3000, reset: daily }
`;
const JSON_HEADERS = { 'content-type': 'application/json' };

let vk: TestValkey;
let A: SettleApp;
let B: SettleApp;
let n = 0;
const tenant = () => `r${Date.now()}-${++n}`;
const body = chat('gpt-4o', 'hello', { max_tokens: 2000 });

beforeAll(async () => {
  vk = await startValkey();
  A = await startSettleApp(CONFIG, { valkeyUrl: vk.url });
  B = await startSettleApp(CONFIG, { valkeyUrl: vk.url });
});
afterAll(async () => {
  await A?.close();
  await B?.close();
  await vk?.close();
});

describe('two replicas on one Valkey', () => {
  it('checked on A, settled on B: the refund is in the shared bucket, seen by A within 1 s', async () => {
    const t = tenant();
    const h = { 'x-tenant-id': t };
    const first = await A.envoy.check({ headers: h, body });
    expect(first.allowed).toBe(true);
    expect((await A.envoy.check({ headers: h, body })).allowed).toBe(false); // A caches this deny
    const ev = await B.settle({ id: first.reservation, headers: JSON_HEADERS, chunks: [chatJson(10, 5)] });
    expect(ev?.outcome).toBe('settled');
    expect(A.events.some((e) => e.id === first.reservation)).toBe(false);
    const t0 = Date.now();
    let again = await A.envoy.check({ headers: h, body });
    while (!again.allowed && Date.now() - t0 < 3000) {
      await new Promise((r) => setTimeout(r, 25));
      again = await A.envoy.check({ headers: h, body });
    }
    expect(again.allowed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1300);
    // what A now sees: capacity − 15 (settled) − this call's reservation
    const reserved = 3000 - Number(first.headers['x-ratelimit-remaining-tokens']);
    expect(Number(again.headers['x-ratelimit-remaining-tokens'])).toBe(3000 - 15 - reserved);
  });

  it("A's own settlement forgets A's cached deny at once", async () => {
    const t = tenant();
    const h = { 'x-tenant-id': t };
    const first = await A.envoy.check({ headers: h, body });
    expect((await A.envoy.check({ headers: h, body })).allowed).toBe(false);
    expect(
      (await A.settle({ id: first.reservation, headers: JSON_HEADERS, chunks: [chatJson(10, 5)] }))?.outcome,
    ).toBe('settled');
    expect((await A.envoy.check({ headers: h, body })).allowed).toBe(true);
  });

  it('a settlement on the other replica of an id already settled is a duplicate', async () => {
    const a = await A.envoy.check({ headers: { 'x-tenant-id': tenant() }, body });
    const play = { id: a.reservation, headers: JSON_HEADERS, chunks: [chatJson(1, 1)] };
    expect((await A.settle(play))?.outcome).toBe('settled');
    expect((await B.settle(play))?.outcome).toBe('duplicate');
  });
});
