/**
 * Overload is not an outage (issue 19, item 11). A burst on a healthy Valkey must be metered: 4
 * tollgate processes on one valkey-server with the default deadlines, 2,000 concurrent checks for one
 * tenant whose limit is 5 per minute — exactly 5 admitted, no answer marked degraded, round after
 * round. Calls that cannot be decided in time are shed with a retryable 503 (`overloaded`), never
 * allowed unmetered. The same in memory. And a real outage (Valkey killed) still fails open within
 * the deadline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkWithin } from './helpers/answer.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const LIMIT = 5;
const CALLS = 2000;
const ROUNDS = Number(process.env.TOLLGATE_BURST_ROUNDS ?? 20);
// Defaults everywhere (decision_deadline 50 ms, store.timeout 25 ms, breaker, fail-open): only limits.
const CONFIG = `
limits:
  - { name: per-minute, per: tenant, requests: ${LIMIT}, every: 1m }
`;

interface Tally {
  admitted: number;
  degraded: number;
  denied429: number;
  overloaded: number;
  other: string[];
}

function tally(answers: CheckAnswer[]): Tally {
  const t: Tally = { admitted: 0, degraded: 0, denied429: 0, overloaded: 0, other: [] };
  for (const a of answers) {
    if (a.allowed) {
      if (a.headers['x-tollgate-degraded'] || a.upstream['x-tollgate-degraded']) t.degraded++;
      else t.admitted++;
    } else if (a.httpStatus === 429) t.denied429++;
    else if (a.httpStatus === 503 && a.json?.error?.code === 'overloaded') t.overloaded++;
    else t.other.push(`${a.code}/${a.httpStatus}/${a.json?.error?.code}`);
  }
  return t;
}

async function burst(clients: EnvoyClient[], tenant: string): Promise<CheckAnswer[]> {
  return Promise.all(
    Array.from({ length: CALLS }, (_, i) =>
      checkWithin(
        clients[i % clients.length],
        { headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o-mini', 'hello', { max_tokens: 5 }) },
        30_000,
      ),
    ),
  );
}

function expectMetered(t: Tally, round: number): void {
  expect({ round, ...t, other: t.other.slice(0, 3) }).toEqual({
    round,
    admitted: LIMIT,
    degraded: 0,
    denied429: CALLS - LIMIT - t.overloaded,
    overloaded: t.overloaded,
    other: [],
  });
}

describe('a burst on a healthy Valkey is metered (4 processes, defaults)', { timeout: 120_000 }, () => {
  let vk: TestValkey;
  const procs: TollgateProc[] = [];
  const clients: EnvoyClient[] = [];
  beforeAll(async () => {
    vk = await startValkey();
    procs.push(
      ...(await Promise.all(
        [0, 1, 2, 3].map(() => spawnTollgate({ yaml: CONFIG, env: { VALKEY_URL: vk.url } })),
      )),
    );
    clients.push(...procs.map((p) => new EnvoyClient(p.grpcPort)));
    // warm: connections open, encoders loaded
    await Promise.all(
      clients.map((c) => c.check({ headers: { 'x-tenant-id': 'warm' }, body: chat('gpt-4o-mini', 'hi') })),
    );
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await vk?.close();
  });

  it(`2,000 concurrent checks, limit ${LIMIT}/min: exactly ${LIMIT} admitted, none degraded, ${ROUNDS} rounds`, async () => {
    const log: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const t = tally(await burst(clients, `burst-${Date.now()}-${round}`));
      log.push(`${t.admitted}/${t.degraded}/${t.denied429}/${t.overloaded}`);
      if (t.admitted !== LIMIT || t.degraded || t.other.length)
        console.log(`[overload] rounds (admitted/degraded/429/overloaded): ${log.join(' ')}`);
      expectMetered(t, round);
    }
    console.log(`[overload] rounds (admitted/degraded/429/overloaded): ${log.join(' ')}`);
    for (const p of procs) expect(p.proc.exitCode).toBeNull();
  });

  it('a real outage (Valkey killed) still fails open within the deadline', async () => {
    await vk.stop(true);
    try {
      const tenant = `outage-${Date.now()}`;
      const answers: { a: CheckAnswer; ms: number }[] = [];
      for (let i = 0; i < 12; i++) {
        const t0 = performance.now();
        const a = await clients[i % 4].check({
          headers: { 'x-tenant-id': tenant },
          body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }),
        });
        answers.push({ a, ms: performance.now() - t0 });
      }
      expect(
        answers.every((x) => x.a.allowed && x.a.upstream['x-tollgate-degraded'] === 'store-unavailable'),
      ).toBe(true);
      // 50 ms decision deadline; generous slack for a loaded 2-core machine
      expect(Math.max(...answers.map((x) => x.ms))).toBeLessThan(50 + 300);
    } finally {
      await vk.restart();
    }
  });
});

describe('the same burst on the in-memory store (one process)', { timeout: 60_000 }, () => {
  let app: TestApp;
  let client: EnvoyClient;
  beforeAll(async () => {
    // startTestApp would widen the deadlines of a config that sets none: set the defaults explicitly
    app = await startTestApp(`${CONFIG}server: { decision_deadline: 50ms }\nstore: { timeout: 25ms }\n`);
    client = new EnvoyClient(app.grpcPort);
  });
  afterAll(async () => {
    client?.close();
    await app?.close(500);
  });

  it(`exactly ${LIMIT} admitted, none degraded, ${ROUNDS} rounds`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const t = tally(await burst([client], `mem-${Date.now()}-${round}`));
      expectMetered(t, round);
    }
  });
});
