/**
 * store.memory_max_records: the in-memory store holds at most this many reservation records (calls
 * never settled — no ext_proc — would otherwise hold ~0.5 KB each for settle.reservation_ttl). Past
 * it the oldest record goes: its reservation stands as charged, nothing is refunded.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { MemoryStore } from '../src/store/memory.js';
import { MemoryLedger } from '../src/store/memory-ledger.js';
import { EntryKind, Outcome } from '../src/store/types.js';

const entry = {
  key: 0,
  kind: EntryKind.Rolling,
  capacity: 1_000_000,
  period: 30 * 86_400_000, // refill over the test: far below one unit
  tzOffsetMin: 0,
  cost: 10,
  shadow: false,
  downgradeAt: 0,
};

describe('store.memory_max_records', () => {
  it('defaults to 20,000 and is configurable from 100', () => {
    expect(parseConfigText('limits: []').store.memoryMaxRecords).toBe(20_000);
    expect(parseConfigText('store: { memory_max_records: 500 }\nlimits: []').store.memoryMaxRecords).toBe(
      500,
    );
    expect(() => parseConfigText('store: { memory_max_records: 10 }\nlimits: []')).toThrow(
      /memory_max_records/,
    );
  });

  it('keeps the newest records; a dropped one stays charged (its settle finds no record)', async () => {
    const s = new MemoryStore();
    s.setMaxRecords(100);
    const keys = Array.from({ length: 150 }, (_, i) => `v:${i}`);
    for (const [i, k] of keys.entries()) {
      const r = await s.check({
        keys: ['bucket', k],
        candidates: [[entry]],
        reservation: { key: 1, id: `id${i}`, ttlMs: 60_000, records: ['rec'] },
      });
      expect(r.outcome).toBe(Outcome.Allowed);
    }
    expect(await s.reservation(keys[0])).toBeUndefined();
    expect(await s.reservation(keys[49])).toBeUndefined();
    expect((await s.reservation(keys[50]))?.entries).toHaveLength(1);
    expect((await s.reservation(keys[149]))?.entries).toHaveLength(1);
    const gone = { id: 'id0', record: '', entries: [], settled: false };
    expect((await s.settle({ key: keys[0], reservation: gone, actual: [] })).outcome).toBe('missing');
    const left = await s.check({ keys: ['bucket'], candidates: [[{ ...entry, cost: 0 }]] });
    expect(left.candidates[0][0].remaining).toBe(1_000_000 - 150 * 10); // every call still charged
    await s.close();
  });

  it('20,000 records each keep their own keys and ids', () => {
    const l = new MemoryLedger();
    const res = (id: string, key: string) => ({
      id,
      record: 'rec',
      entries: [
        {
          index: 0,
          key,
          kind: EntryKind.Rolling,
          capacity: 10,
          period: 1000,
          cost: 1,
          windowEnd: 0,
          nextEnd: 0,
        },
      ],
      settled: false,
    });
    const n = 20_000;
    for (let i = 0; i < n; i++) l.record(`v:${i}`, res(`id${i}`, `t:${i % 3 === 0 ? 'same' : i}`), 10_000, n);
    for (const i of [0, 1, 3, 16_383, 16_384, 16_385, n - 1]) {
      expect(l.reservation(`v:${i}`, 0)?.entries[0].key).toBe(`t:${i % 3 === 0 ? 'same' : i}`);
      expect(l.reservation(`v:${i}`, 0)?.id).toBe(`id${i}`);
    }
  });
});
