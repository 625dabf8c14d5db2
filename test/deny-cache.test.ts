/**
 * The local deny cache: a repeat offender is denied without a Valkey round trip until the T the script
 * gave, cheaper calls still go to Valkey, and the cache can be turned off.
 */
import { describe, expect, it } from 'vitest';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';

const { vk: valkey, serve } = valkeyApps();

const evalshaCalls = async () => {
  const info = await valkey().client.info('commandstats');
  return Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0);
};

describe('deny cache', () => {
  it('repeat denies skip Valkey until T, with an aged Retry-After; cheaper calls still ask Valkey', async () => {
    const { app, client } = await serve(
      'limits:\n  - { name: toks, per: tenant, tokens: 1000, every: 10s }\n',
    );
    const h = { 'x-tenant-id': `dc-${Date.now()}` };
    const big = chat('m', 'x', { max_tokens: 892 }); // 900 tokens
    expect((await client.check({ headers: h, body: big })).allowed).toBe(true);
    const first = await client.check({ headers: h, body: big });
    expect(first.allowed).toBe(false);
    const before = await evalshaCalls();
    const repeats = [];
    for (let i = 0; i < 5; i++) repeats.push(await client.check({ headers: h, body: big }));
    expect(await evalshaCalls()).toBe(before); // no round trips
    expect(app.decider.denyCache.hits).toBe(5);
    for (const r of repeats) {
      expect(r.httpStatus).toBe(429);
      expect(r.json.limit).toBe('toks');
      expect(Number(r.headers['retry-after-ms'])).toBeLessThanOrEqual(
        Number(first.headers['retry-after-ms']),
      );
    }
    // a costlier call is not answered from the cache: Valkey says it can never fit
    const huge = await client.check({ headers: h, body: chat('m', 'x', { max_tokens: 5000 }) });
    expect(huge.headers['x-should-retry']).toBe('false');
    expect(await evalshaCalls()).toBe(before + 1);
    // a cheaper call (50 tokens fits the 100 left) is not answered from the cache either
    const small = await client.check({ headers: h, body: chat('m', 'x', { max_tokens: 42 }) });
    expect(small.allowed).toBe(true);
    expect(await evalshaCalls()).toBe(before + 2);
    // after T, the same call goes to Valkey again and fits once enough has refilled
    await new Promise((r) => setTimeout(r, Number(first.headers['retry-after-ms']) + 1000));
    const later = await client.check({ headers: h, body: big });
    expect(await evalshaCalls()).toBe(before + 3);
    expect(later.allowed).toBe(true);
  });

  it('store.deny_cache: false asks Valkey every time', async () => {
    const { app, client } = await serve(
      'store: { deny_cache: false }\nlimits:\n  - { name: one, per: tenant, requests: 1, every: 1h }\n',
    );
    const h = { 'x-tenant-id': `nodc-${Date.now()}` };
    await client.check({ headers: h, body: chat('m', 'x') });
    const before = await evalshaCalls();
    for (let i = 0; i < 3; i++)
      expect((await client.check({ headers: h, body: chat('m', 'x') })).allowed).toBe(false);
    expect(await evalshaCalls()).toBe(before + 3);
    expect(app.decider.denyCache.hits).toBe(0);
  });
});
