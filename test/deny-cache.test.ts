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

  it("an offender's next calls with other prompts are denied from the cache, as Valkey would deny them", async () => {
    const limits =
      'limits:\n  - { name: one, per: tenant, requests: 1, every: 1h }\n' +
      '  - { name: toks, per: tenant, tokens: 100000, every: 1m }\n';
    const { app, client } = await serve(limits);
    // the same limits on the same Valkey, without the cache: what Valkey itself answers
    const { client: direct } = await serve(`store: { deny_cache: false }\n${limits}`);
    const h = { 'x-tenant-id': `dc-other-${Date.now()}` };
    expect((await client.check({ headers: h, body: chat('m', 'first') })).allowed).toBe(true);
    expect((await client.check({ headers: h, body: chat('m', 'second') })).allowed).toBe(false);
    const calls = [
      chat('m', 'a different prompt'),
      chat('m', 'x '.repeat(500), { max_tokens: 300 }),
      chat('m', 'short', { max_tokens: 1 }),
      chat('m', 'y', { max_tokens: 4000 }),
    ];
    for (const body of calls) {
      const before = await evalshaCalls();
      const hits = app.decider.denyCache.hits;
      const cached = await client.check({ headers: h, body });
      expect(await evalshaCalls()).toBe(before); // answered without Valkey
      expect(app.decider.denyCache.hits).toBe(hits + 1);
      const truth = await direct.check({ headers: h, body });
      expect(await evalshaCalls()).toBe(before + 1);
      expect(truth.allowed).toBe(false);
      expect(cached.httpStatus).toBe(429);
      expect(cached.json.limit).toBe(truth.json.limit);
      expect(cached.json.limit).toBe('one');
      expect(
        Math.abs(Number(cached.headers['retry-after-ms']) - Number(truth.headers['retry-after-ms'])),
      ).toBeLessThan(250);
      for (const k of [
        'x-ratelimit-limit-requests',
        'x-ratelimit-remaining-requests',
        'x-ratelimit-limit-tokens',
      ])
        expect(cached.headers[k]).toBe(truth.headers[k]);
    }
  });

  it('a costlier call that could still fit later is denied from the cache with a longer Retry-After', async () => {
    const limits = 'limits:\n  - { name: toks, per: tenant, tokens: 1000, every: 10s }\n';
    const { app, client } = await serve(limits);
    const { client: direct } = await serve(`store: { deny_cache: false }\n${limits}`);
    const h = { 'x-tenant-id': `dc-costly-${Date.now()}` };
    const big = chat('m', 'x', { max_tokens: 892 }); // 900 tokens: 100 left after the first
    expect((await client.check({ headers: h, body: big })).allowed).toBe(true);
    const first = await client.check({ headers: h, body: big });
    expect(first.allowed).toBe(false);
    const before = await evalshaCalls();
    const bigger = chat('m', 'x', { max_tokens: 942 }); // 950 tokens: 50 more, 0.5 s more at 100/s
    const cached = await client.check({ headers: h, body: bigger });
    expect(await evalshaCalls()).toBe(before);
    expect(app.decider.denyCache.hits).toBe(1);
    const truth = await direct.check({ headers: h, body: bigger });
    expect(truth.allowed).toBe(false);
    const c = Number(cached.headers['retry-after-ms']);
    const t = Number(truth.headers['retry-after-ms']);
    expect(c).toBeGreaterThan(Number(first.headers['retry-after-ms']) + 400);
    expect(Math.abs(c - t)).toBeLessThan(100);
    // cheaper than the denied call but more than the 100 left: still blocked for ~4 s, from the cache
    const cheaper = chat('m', 'x', { max_tokens: 492 }); // 500 tokens
    const cachedCheaper = await client.check({ headers: h, body: cheaper });
    expect(cachedCheaper.allowed).toBe(false);
    expect(app.decider.denyCache.hits).toBe(2);
    const truthCheaper = await direct.check({ headers: h, body: cheaper });
    expect(truthCheaper.allowed).toBe(false);
    const cc = Number(cachedCheaper.headers['retry-after-ms']);
    expect(cc).toBeLessThan(Number(first.headers['retry-after-ms']) - 3000);
    expect(Math.abs(cc - Number(truthCheaper.headers['retry-after-ms']))).toBeLessThan(100);
    expect(await evalshaCalls()).toBe(before + 2); // the two direct calls only
  });

  it('calendar quotas: other costs are denied from the cache until the window ends; one that fits asks Valkey', async () => {
    const limits = 'limits:\n  - { name: day, per: tenant, tokens: 1000, reset: daily }\n';
    const { app, client } = await serve(limits);
    const { client: direct } = await serve(`store: { deny_cache: false }\n${limits}`);
    const h = { 'x-tenant-id': `dc-cal-${Date.now()}` };
    const big = chat('m', 'x', { max_tokens: 892 }); // 900 tokens: 100 left today
    expect((await client.check({ headers: h, body: big })).allowed).toBe(true);
    expect((await client.check({ headers: h, body: big })).allowed).toBe(false);
    const before = await evalshaCalls();
    const other = chat('m', 'x', { max_tokens: 192 }); // 200 tokens: over what is left
    const cached = await client.check({ headers: h, body: other });
    expect(await evalshaCalls()).toBe(before);
    expect(app.decider.denyCache.hits).toBe(1);
    const truth = await direct.check({ headers: h, body: other });
    expect(truth.allowed).toBe(false);
    expect(
      Math.abs(Number(cached.headers['retry-after-ms']) - Number(truth.headers['retry-after-ms'])),
    ).toBeLessThan(250);
    expect(cached.headers['x-ratelimit-remaining-tokens']).toBe('100');
    // 50 tokens fit the 100 left: Valkey decides (and allows)
    const fits = await client.check({ headers: h, body: chat('m', 'x', { max_tokens: 42 }) });
    expect(fits.allowed).toBe(true);
    expect(await evalshaCalls()).toBe(before + 2);
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
