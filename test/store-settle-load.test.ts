/**
 * Store-level load test (not the gRPC path: the end-to-end one drives ext_authz + ext_proc): four
 * ValkeyStore instances, each its own connection as four replicas would have, run 2,000 concurrent
 * check + settle pairs against shared limits on one real valkey-server. Each check goes to a random
 * replica and its settle to another; some settles are sent twice at once from two replicas. At the end
 * every limit holds exactly capacity − Σ actual of the admitted calls (calendar), within the run's
 * refill (rolling), and every concurrency slot is free again.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterStore } from '../src/store/cluster.js';
import { keySlot } from '../src/store/slot.js';
import {
  type CheckPlan,
  EntryKind,
  Outcome,
  type PlanEntry,
  type SettleResult,
  type Store,
} from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';
import { startCluster, type TestCluster } from './helpers/valkey-cluster.js';

const REPLICAS = 4;
const PAIRS = 2000;
const LONG = 30 * 86_400_000;

let vk: TestValkey;
let cluster: TestCluster;
let replicas: ValkeyStore[];
let clusterReplicas: ClusterStore[];
beforeAll(async () => {
  vk = await startValkey();
  cluster = await startCluster();
  replicas = [];
  clusterReplicas = [];
  for (let i = 0; i < REPLICAS; i++) {
    const s = new ValkeyStore({ url: vk.url, timeoutMs: 20_000 });
    await s.connect();
    replicas.push(s);
    const c = new ClusterStore({ url: cluster.url, timeoutMs: 20_000 });
    await c.connect();
    clusterReplicas.push(c);
  }
}, 60_000);
afterAll(async () => {
  for (const s of [...(replicas ?? []), ...(clusterReplicas ?? [])]) await s.close();
  await vk?.close();
  await cluster?.stop();
});

/** mulberry32 (seeded: a failing run is reproducible). */
function prng(seed: number) {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const entry = (kind: EntryKind, key: number, capacity: number, period: number, cost: number): PlanEntry => ({
  key,
  kind,
  capacity,
  period,
  tzOffsetMin: 0,
  cost,
  shadow: false,
  downgradeAt: 0,
});

describe('store-level load: 4 replicas, 2,000 concurrent check + settle pairs on real Valkey', () => {
  it('every bucket ends at capacity − Σ actual (calendar exact, rolling within refill); slots all free', async () => {
    await loadRun(replicas, (k) => vk.client.zcard(k));
  }, 60_000);

  it('the same on a Valkey Cluster with every limit and record in its own slot (slot by slot, compensated; settled per slot)', async () => {
    await loadRun(clusterReplicas, async (k) =>
      cluster.client((await cluster.slotOwner(keySlot(k))).port).zcard(k),
    );
  }, 90_000);
});

async function loadRun(replicas: Store[], zcard: (key: string) => Promise<number>): Promise<void> {
  {
    const rnd = prng(0x10ad);
    const run = randomUUID();
    // 0 requests (rolling), 1 tokens (rolling), 2 tokens (calendar, monthly), 3 dollars (rolling), 4 slots
    const limits = [0, 1, 2, 3, 4].map((i) => `test:${run}:limit:${i}`);
    const CAP_REQ = 1_000_000;
    // tight enough that some calls are denied while reservations are outstanding
    const CAP_TOK = 900_000;
    const CAP_USD = 3_000_000;
    const SLOTS = 1500;
    const calls = Array.from({ length: PAIRS }, (_, i) => {
      const cost = 100 + rnd(900);
      // actual: mostly below the reservation, a tenth beyond it (up to 2×)
      const actual = rnd(10) === 0 ? cost + rnd(cost + 1) : rnd(cost + 1);
      return {
        i,
        cost,
        actual,
        micros: cost * 3,
        actualMicros: actual * 3,
        checkOn: rnd(REPLICAS),
        settleOn: rnd(REPLICAS),
        twiceOn: rnd(5) === 0 ? rnd(REPLICAS) : -1,
        key: `test:${run}:v:${i}`,
      };
    });
    const plan = (c: (typeof calls)[number]): CheckPlan => ({
      keys: [...limits, c.key],
      candidates: [
        [
          entry(EntryKind.Rolling, 0, CAP_REQ, LONG, 1),
          entry(EntryKind.Rolling, 1, CAP_TOK, LONG, c.cost),
          entry(EntryKind.Calendar, 2, CAP_TOK, 4, c.cost),
          entry(EntryKind.Rolling, 3, CAP_USD, LONG, c.micros),
          entry(EntryKind.Concurrent, 4, SLOTS, 600_000, 1),
        ],
      ],
      reservation: { key: 5, id: `id-${run}-${c.i}`, ttlMs: 600_000, records: [`{"i":${c.i}}`] },
    });
    const settleOn = async (replica: number, c: (typeof calls)[number]): Promise<SettleResult> => {
      const store = replicas[replica];
      const reservation = await store.reservation(c.key);
      if (!reservation) return { outcome: 'missing', remaining: [] };
      if (reservation.settled) return { outcome: 'duplicate', remaining: [] };
      expect(reservation.record).toBe(`{"i":${c.i}}`);
      const actual = reservation.entries.map((e) =>
        e.index === 0 || e.index === 4 ? e.cost : e.index === 3 ? c.actualMicros : c.actual,
      );
      return store.settle({ key: c.key, reservation, actual });
    };
    const started = Date.now();
    const results = await Promise.all(
      calls.map(async (c) => {
        const r = await replicas[c.checkOn].check(plan(c));
        if (r.outcome !== Outcome.Allowed) return { c, allowed: false, settled: 0 };
        // let other pairs interleave between the check and its settle
        await new Promise((res) => setImmediate(res));
        const first = settleOn(c.settleOn, c);
        const second = c.twiceOn >= 0 ? settleOn(c.twiceOn, c) : undefined;
        const outs = await Promise.all([first, second].filter((p) => p !== undefined));
        const settled = outs.filter((o) => o.outcome === 'settled').length;
        for (const o of outs) expect(['settled', 'duplicate']).toContain(o.outcome);
        return { c, allowed: true, settled };
      }),
    );
    const elapsed = Date.now() - started;
    const allowed = results.filter((r) => r.allowed);
    // every admitted call was settled exactly once, however many replicas tried
    for (const r of allowed) expect(r.settled).toBe(1);
    expect(allowed.length).toBeGreaterThan(PAIRS / 2);
    expect(allowed.length).toBeLessThan(PAIRS); // some were denied: the limits were contended
    expect(results.some((r) => r.c.twiceOn >= 0 && r.allowed)).toBe(true);
    const sumActual = allowed.reduce((n, r) => n + r.c.actual, 0);
    const sumMicros = allowed.reduce((n, r) => n + r.c.actualMicros, 0);

    const probe = await replicas[0].check({
      keys: limits,
      candidates: [
        [
          entry(EntryKind.Rolling, 0, CAP_REQ, LONG, 0),
          entry(EntryKind.Rolling, 1, CAP_TOK, LONG, 0),
          entry(EntryKind.Calendar, 2, CAP_TOK, 4, 0),
          entry(EntryKind.Rolling, 3, CAP_USD, LONG, 0),
          entry(EntryKind.Concurrent, 4, SLOTS, 600_000, 0),
        ],
      ],
    });
    const [req, tok, cal, usd, slots] = probe.candidates[0].map((e) => e.remaining);
    const refill = (cap: number) => Math.ceil(((Date.now() - started + 1000) * cap) / LONG);
    expect(cal).toBe(CAP_TOK - sumActual);
    expect(tok).toBeGreaterThanOrEqual(CAP_TOK - sumActual);
    expect(tok).toBeLessThanOrEqual(CAP_TOK - sumActual + refill(CAP_TOK));
    expect(usd).toBeGreaterThanOrEqual(CAP_USD - sumMicros);
    expect(usd).toBeLessThanOrEqual(CAP_USD - sumMicros + refill(CAP_USD));
    // request counts never change on settlement
    expect(req).toBeGreaterThanOrEqual(CAP_REQ - allowed.length);
    expect(req).toBeLessThanOrEqual(CAP_REQ - allowed.length + refill(CAP_REQ));
    expect(slots).toBe(SLOTS);
    expect(await zcard(limits[4])).toBe(0);
    expect(elapsed).toBeLessThan(60_000);
  }
}
