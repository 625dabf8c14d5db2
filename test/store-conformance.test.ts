/**
 * One conformance suite, every backend: the Valkey store (real valkey-server, the Lua script; both
 * clients), the in-memory store, and the Valkey Cluster store (a real 3+3 cluster) with a plan's keys in
 * one slot (one script call) and across slots (slot by slot, compensated) must give the same answers.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { windowEnd } from '../src/policy/calendar.js';
import { ClusterStore } from '../src/store/cluster.js';
import { IovalkeyStore } from '../src/store/iovalkey.js';
import { MemoryStore } from '../src/store/memory.js';
import {
  type CheckPlan,
  EntryKind,
  EntryStatus,
  Outcome,
  type PlanEntry,
  type Store,
} from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';
import { startCluster, type TestCluster } from './helpers/valkey-cluster.js';

let vk: TestValkey;
let valkeyStore: ValkeyStore;
let iovalkeyStore: IovalkeyStore;
let cluster: TestCluster;
let clusterStore: ClusterStore;
beforeAll(async () => {
  cluster = await startCluster();
  clusterStore = new ClusterStore({ url: cluster.url, timeoutMs: 2000 });
  await clusterStore.connect();
  vk = await startValkey();
  valkeyStore = new ValkeyStore({ url: vk.url, timeoutMs: 2000 });
  await valkeyStore.connect();
  iovalkeyStore = new IovalkeyStore({ url: vk.url, timeoutMs: 2000 });
  await iovalkeyStore.connect();
}, 60_000);
afterAll(async () => {
  await valkeyStore?.close();
  await iovalkeyStore?.close();
  await clusterStore?.close();
  await cluster?.stop();
  await vk?.close();
});

const rolling = (
  key: number,
  capacity: number,
  periodMs: number,
  cost: number,
  extra: Partial<PlanEntry> = {},
): PlanEntry => ({
  key,
  kind: EntryKind.Rolling,
  capacity,
  period: periodMs,
  tzOffsetMin: 0,
  cost,
  shadow: false,
  downgradeAt: 0,
  ...extra,
});
const calendar = (
  key: number,
  capacity: number,
  unit: number,
  cost: number,
  extra: Partial<PlanEntry> = {},
): PlanEntry => ({
  key,
  kind: EntryKind.Calendar,
  capacity,
  period: unit,
  tzOffsetMin: 0,
  cost,
  shadow: false,
  downgradeAt: 0,
  ...extra,
});

const backends: [string, () => Store][] = [
  ['memory', () => new MemoryStore()],
  ['valkey (store.client: resp)', () => valkeyStore],
  ['valkey (store.client: iovalkey)', () => iovalkeyStore],
  ['valkey cluster, keys in one slot', () => clusterStore],
  ['valkey cluster, keys across slots', () => clusterStore],
];

describe.each(backends)('store conformance: %s', (name, make) => {
  // one slot: a shared hash tag; across slots: each key hashes on its own (slot by slot, compensated)
  const tagged = name.includes('one slot');
  const keys = (n: number) => {
    const id = randomUUID();
    return Array.from({ length: n }, (_, i) => (tagged ? `test:{${id}}:${i}` : `test:${id}:${i}`));
  };

  it('rolling bucket admits up to capacity, then denies with the refill time', async () => {
    const s = make();
    const k = keys(1);
    const plan = (cost: number): CheckPlan => ({ keys: k, candidates: [[rolling(0, 10, 60_000, cost)]] });
    const first = await s.check(plan(4));
    expect(first.outcome).toBe(Outcome.Allowed);
    expect(first.candidates[0][0].remaining).toBe(6);
    expect((await s.check(plan(6))).candidates[0][0].remaining).toBe(0);
    const denied = await s.check(plan(3));
    expect(denied.outcome).toBe(Outcome.Denied);
    expect(denied.chosen).toBe(-1);
    expect(denied.candidates[0][0].status).toBe(EntryStatus.Exceeded);
    // 3 units at 10 per 60 s refill in ~18 s
    expect(denied.retryMs).toBeGreaterThan(17_000);
    expect(denied.retryMs).toBeLessThanOrEqual(18_000);
  });

  it('is all-or-nothing across limits: a denied call debits none', async () => {
    const s = make();
    const k = keys(2);
    const plan = (a: number, b: number): CheckPlan => ({
      keys: k,
      candidates: [[rolling(0, 100, 60_000, a), rolling(1, 10, 60_000, b)]],
    });
    expect((await s.check(plan(5, 8))).outcome).toBe(Outcome.Allowed);
    const d = await s.check(plan(5, 5)); // fits the first, not the second
    expect(d.outcome).toBe(Outcome.Denied);
    expect(d.candidates[0][0].status).toBe(EntryStatus.Fits);
    expect(d.candidates[0][1].status).toBe(EntryStatus.Exceeded);
    const after = await s.check(plan(0, 0));
    expect(after.candidates[0][0].remaining).toBe(95); // not 90
    expect(after.candidates[0][1].remaining).toBe(2);
  });

  it('never: a cost above capacity is reported as never fitting', async () => {
    const s = make();
    const r = await s.check({ keys: keys(1), candidates: [[rolling(0, 10, 60_000, 11)]] });
    expect(r.outcome).toBe(Outcome.Never);
    expect(r.retryMs).toBe(-1);
    expect(r.candidates[0][0].status).toBe(EntryStatus.Never);
  });

  it('calendar quota counts within the UTC window and reports its end', async () => {
    const s = make();
    const k = keys(1);
    for (const unit of [1, 2, 3, 4]) {
      const kk = [`${k[0]}:${unit}`];
      const r = await s.check({ keys: kk, candidates: [[calendar(0, 5, unit, 2)]] });
      expect(r.outcome).toBe(Outcome.Allowed);
      expect(r.candidates[0][0].remaining).toBe(3);
      expect(r.nowMs + r.candidates[0][0].resetMs).toBe(windowEnd(r.nowMs, unit, 0));
      const d = await s.check({ keys: kk, candidates: [[calendar(0, 5, unit, 4)]] });
      expect(d.outcome).toBe(Outcome.Denied);
      expect(d.retryMs).toBe(windowEnd(d.nowMs, unit, 0) - d.nowMs);
    }
  });

  it('calendar window honours a time zone offset', async () => {
    const s = make();
    const r = await s.check({ keys: keys(1), candidates: [[calendar(0, 5, 2, 1, { tzOffsetMin: 330 })]] });
    expect(r.nowMs + r.candidates[0][0].resetMs).toBe(windowEnd(r.nowMs, 2, 330));
  });

  it('fallback: the first candidate that fits is debited, nothing else', async () => {
    const s = make();
    const k = keys(3); // 0 = shared tenant requests, 1 = preferred model tokens, 2 = fallback model tokens
    const plan = (): CheckPlan => ({
      keys: k,
      candidates: [
        [rolling(0, 100, 60_000, 1), rolling(1, 50, 3_600_000, 40)],
        [rolling(0, 100, 60_000, 1), rolling(2, 1000, 3_600_000, 40)],
      ],
    });
    expect((await s.check(plan())).chosen).toBe(0);
    const r = await s.check(plan());
    expect(r.outcome).toBe(Outcome.Allowed);
    expect(r.chosen).toBe(1);
    const probe = await s.check({
      keys: k,
      candidates: [
        [rolling(0, 100, 60_000, 0), rolling(1, 50, 3_600_000, 0), rolling(2, 1000, 3_600_000, 0)],
      ],
    });
    expect(probe.candidates[0].map((e) => e.remaining)).toEqual([98, 10, 960]);
  });

  it('denies when no candidate fits, with the earliest retry of any candidate', async () => {
    const s = make();
    const k = keys(2);
    await s.check({ keys: k, candidates: [[rolling(0, 10, 10_000, 10)], [rolling(1, 10, 100_000, 10)]] });
    await s.check({ keys: k, candidates: [[rolling(1, 10, 100_000, 10)]] });
    const d = await s.check({
      keys: k,
      candidates: [[rolling(0, 10, 10_000, 5)], [rolling(1, 10, 100_000, 5)]],
    });
    expect(d.outcome).toBe(Outcome.Denied);
    expect(d.retryMs).toBeGreaterThan(4_500); // candidate 0 refills 5 units in 5 s; candidate 1 needs 50 s
    expect(d.retryMs).toBeLessThanOrEqual(5_000);
  });

  it('downgrade threshold routes to the fallback before the limit is spent', async () => {
    const s = make();
    const k = keys(2);
    const plan = (): CheckPlan => ({
      keys: k,
      candidates: [[rolling(0, 100, 3_600_000, 30, { downgradeAt: 20 })], [rolling(1, 1000, 3_600_000, 30)]],
    });
    expect((await s.check(plan())).chosen).toBe(0); // 70 left
    expect((await s.check(plan())).chosen).toBe(0); // 40 left
    const r = await s.check(plan()); // would leave 10 < 20
    expect(r.chosen).toBe(1);
    expect(r.candidates[0][0].status).toBe(EntryStatus.BelowDowngrade);
    // with the fallback exhausted, the preferred model is used to the end rather than denying
    await s.check({ keys: k, candidates: [[rolling(1, 1000, 3_600_000, 970)]] });
    const last = await s.check(plan());
    expect(last.chosen).toBe(0);
    expect(last.candidates[0][0].remaining).toBe(10);
  });

  it('shadow entries never block and are not debited when over', async () => {
    const s = make();
    const k = keys(2);
    const plan = (): CheckPlan => ({
      keys: k,
      candidates: [[rolling(0, 100, 60_000, 1), rolling(1, 1, 60_000, 1, { shadow: true })]],
    });
    expect((await s.check(plan())).outcome).toBe(Outcome.Allowed);
    const r = await s.check(plan());
    expect(r.outcome).toBe(Outcome.Allowed);
    expect(r.candidates[0][1].status).toBe(EntryStatus.Exceeded);
    expect(r.candidates[0][0].remaining).toBe(98);
  });

  it('dry run decides without debiting', async () => {
    const s = make();
    const k = keys(1);
    const r = await s.check({ keys: k, candidates: [[rolling(0, 10, 60_000, 4)]], dryRun: true });
    expect(r.outcome).toBe(Outcome.Allowed);
    expect(r.candidates[0][0].remaining).toBe(6);
    const again = await s.check({ keys: k, candidates: [[rolling(0, 10, 60_000, 0)]] });
    expect(again.candidates[0][0].remaining).toBe(10);
  });

  it('refills continuously', async () => {
    const s = make();
    const k = keys(1);
    await s.check({ keys: k, candidates: [[rolling(0, 100, 1_000, 100)]] });
    await new Promise((r) => setTimeout(r, 250));
    const r = await s.check({ keys: k, candidates: [[rolling(0, 100, 1_000, 0)]] });
    expect(r.candidates[0][0].remaining).toBeGreaterThanOrEqual(20);
    expect(r.candidates[0][0].remaining).toBeLessThanOrEqual(40);
  });
});

describe('valkey specifics', () => {
  it('keys expire on their own', async () => {
    const k = [`test:${randomUUID()}:ttl`];
    await valkeyStore.check({ keys: k, candidates: [[rolling(0, 10, 60_000, 1)]] });
    const ttl = await vk.client.pttl(k[0]);
    // a period and a quarter: the key outlives the time its bucket is full again
    expect(ttl).toBeGreaterThan(60_000);
    expect(ttl).toBeLessThanOrEqual(75_000);
    const kc = [`test:${randomUUID()}:cal`];
    await valkeyStore.check({ keys: kc, candidates: [[calendar(0, 10, 1, 1)]] });
    const cttl = await vk.client.pttl(kc[0]);
    const end = Number(await vk.client.hget(kc[0], 'e'));
    // the window's end plus 1 s, set when the window starts; later debits leave it alone
    expect(Math.abs(Date.now() + cttl - (end + 1000))).toBeLessThan(2000);
    await valkeyStore.check({ keys: kc, candidates: [[calendar(0, 10, 1, 1)]] });
    expect(await vk.client.pttl(kc[0])).toBeLessThanOrEqual(cttl);
    expect(await vk.client.hget(kc[0], 'u')).toBe('2');
  });

  it('a rolling key outlives every debit by at least one period, without moving its expiry on every call', async () => {
    // period 1 s: the expiry is set to 1.25 s and moved only once less than 1 s is left
    const k = [`test:${randomUUID()}:ttl-rolling`];
    const debit = () => valkeyStore.check({ keys: k, candidates: [[rolling(0, 1000, 1_000, 1)]] });
    await debit();
    expect(await vk.client.pttl(k[0])).toBeGreaterThan(1_000);
    let moved = 0;
    let last = Number(await vk.client.hget(k[0], 'x'));
    const started = Date.now();
    while (Date.now() - started < 1_500) {
      await debit();
      const [pttl, x, t] = await Promise.all([
        vk.client.pttl(k[0]),
        vk.client.hget(k[0], 'x').then(Number),
        vk.client.hget(k[0], 't').then(Number),
      ]);
      // the invariant: the key lives until at least one period after the last debit
      expect(x - t).toBeGreaterThanOrEqual(1_000);
      expect(pttl).toBeGreaterThan(0);
      if (x !== last) moved++;
      last = x;
      await new Promise((r) => setTimeout(r, 20));
    }
    // ~50 debits in 1.5 s moved the expiry a handful of times (about every 250 ms), not every time
    expect(moved).toBeGreaterThanOrEqual(2);
    expect(moved).toBeLessThanOrEqual(12);
    // and the level is right: 1000 capacity, refilling 1/ms, so it never ran dry
    const r = await valkeyStore.check({ keys: k, candidates: [[rolling(0, 1000, 1_000, 0)]] });
    expect(r.candidates[0][0].remaining).toBeGreaterThan(900);
  });

  it('a calendar window that has ended resets the quota', async () => {
    const k = [`test:${randomUUID()}:reset`];
    await valkeyStore.check({ keys: k, candidates: [[calendar(0, 10, 2, 10)]] });
    expect((await valkeyStore.check({ keys: k, candidates: [[calendar(0, 10, 2, 1)]] })).outcome).toBe(
      Outcome.Denied,
    );
    // the window end passes (as it would at UTC midnight)
    await vk.client.hset(k[0], 'e', String(Date.now() - 1));
    const r = await valkeyStore.check({ keys: k, candidates: [[calendar(0, 10, 2, 1)]] });
    expect(r.outcome).toBe(Outcome.Allowed);
    expect(r.candidates[0][0].remaining).toBe(9);
  });

  it('script SHA matches SCRIPT LOAD and survives SCRIPT FLUSH', async () => {
    const { loadScript } = await import('../src/store/scripts.js');
    const sc = loadScript('check-limits');
    expect(await vk.client.script('LOAD', sc.source)).toBe(sc.sha);
    await vk.client.script('FLUSH');
    expect(await vk.client.script('EXISTS', sc.sha)).toEqual([0]);
    const r = await valkeyStore.check({
      keys: [`test:${randomUUID()}`],
      candidates: [[rolling(0, 10, 60_000, 1)]],
    });
    expect(r.outcome).toBe(Outcome.Allowed);
    expect(await vk.client.script('EXISTS', sc.sha)).toEqual([1]);
  });
});
