/**
 * The gaps between a cluster check's or settlement's script calls (src/store/cluster-check.ts,
 * cluster-settle.ts), on a real 3+3 cluster, with faults injected into the store's script calls: a
 * record that cannot be written refunds every slot; a slot that refused wins over a slot that failed
 * (the call is denied, not failed open); a settlement part whose reply was lost is retried and applied
 * once; a dry run reports what the queue would do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterStore } from '../src/store/cluster.js';
import type { ExecScript } from '../src/store/cluster-check.js';
import { settleAcrossSlots } from '../src/store/cluster-settle.js';
import { keySlot } from '../src/store/slot.js';
import { EntryKind, Outcome, type PlanEntry } from '../src/store/types.js';
import { startCluster, type TestCluster } from './helpers/valkey-cluster.js';

let cluster: TestCluster;
let store: ClusterStore;
beforeAll(async () => {
  cluster = await startCluster();
  store = new ClusterStore({ url: cluster.url, timeoutMs: 5000 });
  await store.connect();
}, 60_000);
afterAll(async () => {
  await store?.close();
  await cluster?.stop();
});

const LONG = 30 * 86_400_000;
const e = (key: number, capacity: number, cost: number, extra: Partial<PlanEntry> = {}): PlanEntry => ({
  key,
  kind: EntryKind.Rolling,
  capacity,
  period: LONG,
  tzOffsetMin: 0,
  cost,
  shadow: false,
  downgradeAt: 0,
  ...extra,
});

/** The store's script runner, and a way to put a faulty one in its place. */
const realExec = (): ExecScript => (store as unknown as { exec: ExecScript }).exec;
function withExec(exec: ExecScript): () => void {
  const real = realExec();
  Object.defineProperty(store, 'exec', { value: exec, configurable: true, writable: true });
  return () => Object.defineProperty(store, 'exec', { value: real, configurable: true, writable: true });
}

let n = 0;
const keysFor = () => {
  const id = `${Date.now()}-${n++}`;
  return [`cf:r:a:{t${id}}`, `cf:r:global:${id}`, `cf:v:{x${id}}:r`];
};

async function left(key: string, capacity: number): Promise<number> {
  const r = await store.check({ keys: [key], candidates: [[e(0, capacity, 0)]] });
  return r.candidates[0][0].remaining;
}

describe('cluster store faults', () => {
  it('a record that cannot be written: every slot that debited is refunded, the call fails', async () => {
    const keys = keysFor();
    const real = realExec();
    const restore = withExec((s, k, a) =>
      s.name === 'reservation-put' ? Promise.reject(new Error('node down')) : real(s, k, a),
    );
    try {
      const plan = {
        keys,
        candidates: [[e(0, 100, 10), e(1, 100, 10)]],
        reservation: { key: 2, id: 'x:1', ttlMs: 60_000, records: ['rec'] },
      };
      await expect(store.check(plan)).rejects.toThrow(/node down/);
    } finally {
      restore();
    }
    expect(await left(keys[0], 100)).toBe(100);
    expect(await left(keys[1], 100)).toBe(100);
  });

  it('a slot that refused wins over a slot that failed: the call is denied, the other debit refunded', async () => {
    const [a, g] = keysFor();
    await store.check({ keys: [g], candidates: [[e(0, 100, 95)]] }); // 5 left globally
    const real = realExec();
    const failing = keySlot(a);
    const restore = withExec((s, k, args) =>
      s.name === 'check-limits' && keySlot(k[0]) === failing && k.length === 1 && args.length > 3
        ? Promise.reject(new Error('timeout'))
        : real(s, k, args),
    );
    let r: Awaited<ReturnType<typeof store.check>>;
    try {
      r = await store.check({ keys: [a, g], candidates: [[e(0, 100, 10), e(1, 100, 10)]] });
    } finally {
      restore();
    }
    expect(r.outcome).toBe(Outcome.Denied);
    expect(await left(a, 100)).toBe(100);
    expect(await left(g, 100)).toBe(5);
  });

  it('a settlement part whose reply was lost is retried and applied once', async () => {
    const keys = keysFor();
    const plan = {
      keys,
      candidates: [[e(0, 100, 30), e(1, 100, 30)]],
      reservation: { key: 2, id: 'x:2', ttlMs: 60_000, records: ['rec'] },
    };
    expect((await store.check(plan)).chosen).toBe(0);
    const reservation = (await store.reservation(keys[2]))!;
    const real = realExec();
    let lost = 0;
    // the first settle-entries call of each slot runs, then its reply is "lost"
    const exec: ExecScript = async (s, k, a) => {
      const out = await real(s, k, a);
      if (s.name === 'settle-entries' && lost < 2) {
        lost++;
        throw new Error('reply lost');
      }
      return out;
    };
    const res = await settleAcrossSlots({ key: keys[2], reservation, actual: [10, 10] }, exec);
    expect(res.outcome).toBe('settled');
    expect(lost).toBe(2);
    expect(await left(keys[0], 100)).toBe(90); // 100 − 30 + (30 − 10), once
    expect(await left(keys[1], 100)).toBe(90);
    expect((await store.settle({ key: keys[2], reservation, actual: [10, 10] })).outcome).toBe('duplicate');
  });

  it('a claim with the wrong number of entries leaves the record unclaimed', async () => {
    const keys = keysFor();
    const plan = {
      keys,
      candidates: [[e(0, 100, 30), e(1, 100, 30)]],
      reservation: { key: 2, id: 'x:3', ttlMs: 60_000, records: ['rec'] },
    };
    await store.check(plan);
    const reservation = (await store.reservation(keys[2]))!;
    await expect(store.settle({ key: keys[2], reservation, actual: [10] })).rejects.toThrow(
      /2 entries, not 1|entries/,
    );
    expect((await store.reservation(keys[2]))?.settled).toBe(false);
    expect((await store.settle({ key: keys[2], reservation, actual: [10, 10] })).outcome).toBe('settled');
  });
});
