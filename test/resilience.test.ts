/**
 * Keep serving when Valkey fails: the breaker (closed → open → half-open probe → closed/open), every
 * check answered within the decision deadline when Valkey is stopped or paused, recovery, and the
 * allow / deny / local failure policies. A real valkey-server the test stops, pauses and restarts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreTimeoutError } from '../src/errors.js';
import { Breaker, type BreakerState } from '../src/resilience/breaker.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

describe('breaker', () => {
  it('opens after N consecutive failures, lets one probe through when half-open, closes on success', async () => {
    let now = 0;
    const changes: string[] = [];
    const b = new Breaker(
      { failures: 3, openMs: 1000 },
      (to: BreakerState, from: BreakerState) => changes.push(`${from}→${to}`),
      () => now,
    );
    const fail = () => b.run(async () => Promise.reject(new Error('down')));
    const ok = () => b.run(async () => 'ok');
    await expect(fail()).rejects.toThrow('down');
    await expect(fail()).rejects.toThrow('down');
    expect(b.current).toBe('closed');
    await expect(ok()).resolves.toBe('ok'); // success resets the count
    for (let i = 0; i < 3; i++) await expect(fail()).rejects.toThrow('down');
    expect(b.current).toBe('open');
    await expect(ok()).rejects.toThrow(/circuit breaker open/);
    now = 1000;
    expect(b.current).toBe('half-open');
    // one probe only: a second call while the probe is in flight is refused
    let release!: () => void;
    const probe = b.run(() => new Promise<string>((r) => (release = () => r('probe'))));
    await expect(ok()).rejects.toThrow(/circuit breaker open/);
    release();
    await expect(probe).resolves.toBe('probe');
    expect(b.current).toBe('closed');
    // a failed probe re-opens
    for (let i = 0; i < 3; i++) await expect(fail()).rejects.toThrow();
    now = 2500;
    await expect(fail()).rejects.toThrow('down');
    expect(b.current).toBe('open');
    now = 3000;
    expect(b.current).toBe('open');
    now = 3500;
    expect(b.current).toBe('half-open');
    expect(changes).toEqual([
      'closed→open',
      'open→half-open',
      'half-open→closed',
      'closed→open',
      'open→half-open',
      'half-open→open',
    ]);
  });
});

describe('breaker: stale results', () => {
  it('a call started before the breaker opened cannot close it when it finally succeeds', async () => {
    const now = 0;
    const b = new Breaker(
      { failures: 2, openMs: 1000 },
      () => {},
      () => now,
    );
    let release!: () => void;
    const slow = b.run(() => new Promise<string>((r) => (release = () => r('late'))));
    for (let i = 0; i < 2; i++)
      await expect(b.run(async () => Promise.reject(new Error('down')))).rejects.toThrow();
    expect(b.current).toBe('open');
    release();
    await expect(slow).resolves.toBe('late');
    expect(b.current).toBe('open'); // the stale success was ignored
  });
});

describe('breaker: a slow store that still answers', () => {
  it('timeouts whose replies arrive late do not open it; failures without any reply do', async () => {
    let now = 0;
    const b = new Breaker(
      { failures: 3, openMs: 1000 },
      () => {},
      () => now,
    );
    const timeoutThatRepliesLate = () =>
      b.run(async () => {
        now += 30;
        throw Object.assign(new StoreTimeoutError(25), { late: Promise.resolve(true) });
      });
    for (let i = 0; i < 10; i++) await expect(timeoutThatRepliesLate()).rejects.toThrow();
    await new Promise((r) => setImmediate(r));
    expect(b.current).toBe('closed');
    expect(b.forgiven).toBe(10);
    // The store stops replying: the timed-out calls fail for good, and three open the breaker.
    for (let i = 0; i < 3; i++) {
      await expect(
        b.run(async () => {
          now += 30;
          throw Object.assign(new StoreTimeoutError(25), { late: Promise.resolve(false) });
        }),
      ).rejects.toThrow();
    }
    await new Promise((r) => setImmediate(r));
    expect(b.current).toBe('open');
  });
});

/** Keeps Valkey busy (serving no one else) for ~50 ms here: a counted loop (TIME is frozen in a script). */
const BUSY_SLICE = 'local x = 0 for i = 1, 2500000 do x = x + i end return 1';

const CONFIG = (policy: string, extra = '') => `
server:
  decision_deadline: 60ms
store:
  timeout: 25ms
  breaker: { failures: 3, open_for: 1s }
  on_store_failure: ${policy}
  ${extra}
limits:
  - { name: per-tenant, per: tenant, requests: 10, every: 1h }
`;

describe('Valkey failures', () => {
  let vk: TestValkey;
  beforeAll(async () => {
    vk = await startValkey();
  });
  afterAll(async () => {
    await vk?.close();
  });

  async function withApp<T>(yaml: string, fn: (app: TestApp, c: EnvoyClient) => Promise<T>): Promise<T> {
    const app = await startTestApp(yaml, { valkeyUrl: vk.url });
    const c = new EnvoyClient(app.grpcPort);
    try {
      return await fn(app, c);
    } finally {
      c.close();
      await app.close(500);
    }
  }

  const timed = async (c: EnvoyClient, t: string) => {
    const t0 = performance.now();
    const r = await c.check({ headers: { 'x-tenant-id': t }, body: chat('m', 'hi', { max_tokens: 1 }) });
    return { r, ms: performance.now() - t0 };
  };

  it('fail open: stopped Valkey → every check allowed within the deadline, breaker opens, recovery after restart', async () => {
    await withApp(CONFIG('allow'), async (app, c) => {
      const t = `fo-${Date.now()}`;
      for (let i = 0; i < 10; i++) expect((await timed(c, t)).r.allowed).toBe(true);
      expect((await timed(c, t)).r.allowed).toBe(false); // enforced while Valkey is up

      await vk.stop(true);
      // the tenant already over its limit stays denied from the local deny cache (T came from Valkey)
      const repeat = await timed(c, t);
      expect(repeat.r.allowed).toBe(false);
      expect(repeat.r.httpStatus).toBe(429);
      const fresh = `${t}-fresh`;
      const during = [];
      for (let i = 0; i < 20; i++) during.push(await timed(c, fresh));
      expect(during.every((x) => x.r.allowed)).toBe(true);
      expect(during.every((x) => x.r.upstream['x-tollgate-degraded'] === 'store-unavailable')).toBe(true);
      expect(during.every((x) => x.r.headers['x-tollgate-degraded'] === 'store-unavailable')).toBe(true);
      const worst = Math.max(...during.map((x) => x.ms));
      // bounded by the 60 ms deadline, not by Valkey: generous slack for a loaded CI machine
      expect(worst).toBeLessThan(60 + 300);
      expect(app.decider.breaker.current).toBe('open');
      const transitions = app.logs.filter((l) => l.includes('store circuit breaker'));
      expect(transitions.length).toBe(1); // logged once per transition, not per call
      const metrics = await app.metrics.registry.getSingleMetricAsString('tollgate_breaker_state');
      expect(metrics).toMatch(/tollgate_breaker_state 2/);

      await vk.restart(); // comes back empty
      await new Promise((r) => setTimeout(r, 1200)); // past open_for: next call is the half-open probe
      // (t itself stays denied from the deny cache until the T Valkey gave before it lost its state)
      const after = `${t}-after`;
      let recovered = false;
      for (let i = 0; i < 20 && !recovered; i++) {
        const x = await timed(c, after);
        recovered = x.r.allowed && !x.r.upstream['x-tollgate-degraded'];
        if (!recovered) await new Promise((r) => setTimeout(r, 100));
      }
      expect(recovered).toBe(true);
      expect(app.decider.breaker.current).toBe('closed');
      // enforcement resumed on the (empty) server: 10 more, then deny
      let allowed = 1;
      while ((await timed(c, after)).r.allowed) allowed++;
      expect(allowed).toBe(10);
    });
  });

  it('a slow but alive Valkey fails open only the calls that time out; the breaker stays closed', async () => {
    await withApp(CONFIG('allow'), async (app, c) => {
      const t = `slow-${Date.now()}`;
      expect((await timed(c, t)).r.upstream['x-tollgate-degraded']).toBeUndefined();
      // Another client keeps Valkey busy in ~50 ms slices (longer than store.timeout, 25 ms) with short
      // gaps: our calls are answered late, between the slices — slow, not down.
      const { default: Valkey } = await import('iovalkey');
      const busy = new Valkey(vk.url);
      let stop = false;
      const slices = (async () => {
        while (!stop) {
          await busy.eval(BUSY_SLICE, 0);
          await new Promise((r) => setTimeout(r, 15));
        }
      })();
      // Until five calls have timed out (under the old rule three in a row opened the breaker).
      const during: Array<Awaited<ReturnType<typeof timed>>> = [];
      const degraded = () => during.filter((x) => x.r.upstream['x-tollgate-degraded']).length;
      const deadline = Date.now() + 5000;
      while (degraded() < 5 && Date.now() < deadline) during.push(await timed(c, `${t}-${during.length}`));
      stop = true;
      await slices;
      busy.disconnect();
      await new Promise((r) => setTimeout(r, 100)); // the late replies are in
      expect(degraded()).toBeGreaterThanOrEqual(5); // timed-out calls were answered per policy …
      expect(during.every((x) => x.r.allowed)).toBe(true);
      expect(app.decider.breaker.current).toBe('closed'); // … but the breaker never opened
      expect(app.decider.breaker.forgiven).toBeGreaterThanOrEqual(5);
      const scraped = await app.metrics.registry.getSingleMetricAsString(
        'tollgate_store_timeouts_forgiven_total',
      );
      expect(scraped).toContain(`tollgate_store_timeouts_forgiven_total ${app.decider.breaker.forgiven}`);
      expect((await timed(c, t)).r.upstream['x-tollgate-degraded']).toBeUndefined(); // Valkey decides again
    });
  });

  it('CLIENT PAUSE longer than the timeout: answered within the deadline, failing open', async () => {
    await withApp(CONFIG('allow'), async (_app, c) => {
      const t = `pause-${Date.now()}`;
      expect((await timed(c, t)).r.upstream['x-tollgate-degraded']).toBeUndefined();
      await vk.client.call('CLIENT', 'PAUSE', '1500', 'ALL');
      const during = await Promise.all(Array.from({ length: 10 }, () => timed(c, t)));
      expect(
        during.every((x) => x.r.allowed && x.r.upstream['x-tollgate-degraded'] === 'store-unavailable'),
      ).toBe(true);
      // bounded by the deadline (60 ms), nowhere near the 1.5 s pause; slack for a loaded machine
      expect(Math.max(...during.map((x) => x.ms))).toBeLessThan(60 + 300);
      await new Promise((r) => setTimeout(r, 1600));
    });
  });

  it('on_store_failure: deny answers 503 with a JSON error', async () => {
    await withApp(CONFIG('deny'), async (_app, c) => {
      await vk.stop(true);
      try {
        const { r, ms } = await timed(c, 'deny-policy');
        expect(r.allowed).toBe(false);
        expect(r.httpStatus).toBe(503);
        expect(r.code).toBe(14);
        expect(r.json.error.code).toBe('rate_limiter_unavailable');
        expect(ms).toBeLessThan(60 + 300);
      } finally {
        await vk.restart();
      }
    });
  });

  it('on_store_failure: local enforces each limit divided by the replica count', async () => {
    await withApp(CONFIG('local', 'replicas: 2'), async (_app, c) => {
      await vk.stop(true);
      try {
        const t = `local-${Date.now()}`;
        const rs = [];
        for (let i = 0; i < 8; i++) rs.push((await timed(c, t)).r);
        expect(rs.filter((r) => r.allowed).length).toBe(5); // 10 / 2 replicas
        expect(rs[0].upstream['x-tollgate-degraded']).toBe('store-unavailable;local');
        expect(rs[7].httpStatus).toBe(429);
      } finally {
        await vk.restart();
      }
    });
  });
});
