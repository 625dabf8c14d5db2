/**
 * The in-memory store holds each reservation record as one string (src/store/memory-record.ts): what
 * is read back must deep-equal what was recorded, for any strings and numbers, through eviction at
 * the bound, expiry, sweeping and the settled mark.
 */
import { describe, expect, it } from 'vitest';
import { rng } from '../bench/workloads.js';
import { EntryKind, type Reservation, type ReservedEntry } from '../src/policy/plan-types.js';
import { MemoryLedger } from '../src/store/memory-ledger.js';
import { decodeRecord, encodeRecord, settledRecord } from '../src/store/memory-record.js';

const entry = (over: Partial<ReservedEntry> = {}): ReservedEntry => ({
  index: 0,
  key: 'tg:r:tenant-tokens:{acme}',
  kind: EntryKind.Rolling,
  capacity: 1_000_000,
  period: 60_000,
  cost: 466,
  windowEnd: 0,
  nextEnd: 0,
  ...over,
});

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  9,
  10,
  123_456_789_012_345, // 15 digits
  999_999_999_999_999,
  1_000_000_000_000_000, // 16 digits
  Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER,
  2 ** 53 + 2,
  1e21,
  1.5e300,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  0.1 + 0.2,
  -2.5e-7,
  1796342400000,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  Number.NaN,
];

const STRINGS = [
  '',
  '|',
  '||',
  '0|1|2',
  '12|x',
  'a'.repeat(13),
  'ünïcødé ✓ 🦊',
  '\ud800 lone \udfff surrogates',
  '\u0000\n\r\t"\\',
  '{"m":"gpt-4o-mini","d":"openai.chat","$":[150000,600000,-1,-1],"at":1796326707183}',
  'x'.repeat(100_000),
];

function reservations(): Reservation[] {
  const out: Reservation[] = [
    { id: 'id', record: 'rec', entries: [], settled: false },
    { id: 'id', record: 'rec', entries: [], settled: true },
    {
      id: 'mx7yji0f.oAWGAceJ9eLqzAkSxCRxQA',
      record: STRINGS[9],
      entries: [
        entry({ key: 'bench:r:tenant-requests:tenant-17', capacity: 100_000_000, cost: 1 }),
        entry({ index: 1, key: 'bench:r:tenant-tokens:tenant-17', capacity: 1e12 }),
        entry({
          index: 2,
          key: 'bench:c:tenant-spend:daily:tenant-17',
          kind: EntryKind.Calendar,
          capacity: 1e12,
          period: 2,
          cost: 186,
          windowEnd: 1796342400000,
          nextEnd: 1796428800000,
        }),
        entry({ index: 4, key: 'bench:k:conc', kind: EntryKind.Concurrent, capacity: 5, cost: 1 }),
      ],
      settled: false,
    },
  ];
  for (const [i, s] of STRINGS.entries())
    out.push({
      id: s,
      record: STRINGS[(i + 3) % STRINGS.length],
      entries: [entry({ key: s })],
      settled: false,
    });
  // every number in every numeric field
  for (const n of NUMBERS)
    out.push({
      id: `n${n}`,
      record: String(n),
      entries: [
        entry({ index: n, kind: n as EntryKind, capacity: n, period: n, cost: n, windowEnd: n, nextEnd: n }),
        entry({ index: 1, key: `${n}|${n}`, cost: n }),
      ],
      settled: false,
    });
  return out;
}

/** Seeded random strings (any UTF-16 code unit, '|' and digits often) and numbers (any double often). */
function fuzzed(seed: number, n: number): Reservation[] {
  const r = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(r() * xs.length)];
  const str = () => {
    let s = '';
    const len = pick([0, 1, 12, 13, 14, 40, 300]);
    for (let i = 0; i < len; i++)
      s += r() < 0.3 ? pick(['|', '0', '9', '-', 'e', '.']) : String.fromCharCode(Math.floor(r() * 0x10000));
    return s;
  };
  const f64 = new Float64Array(1);
  const u32 = new Uint32Array(f64.buffer);
  const number = () => {
    if (r() < 0.3) return pick(NUMBERS);
    if (r() < 0.5) return Math.floor(r() * 2 ** (1 + Math.floor(r() * 53))) * (r() < 0.2 ? -1 : 1);
    u32[0] = Math.floor(r() * 2 ** 32);
    u32[1] = Math.floor(r() * 2 ** 32);
    return f64[0]; // any bit pattern: subnormals, huge, NaN
  };
  return Array.from({ length: n }, () => ({
    id: str(),
    record: str(),
    settled: r() < 0.2,
    entries: Array.from({ length: Math.floor(r() * 5) }, () => ({
      index: number(),
      key: str(),
      kind: number() as EntryKind,
      capacity: number(),
      period: number(),
      cost: number(),
      windowEnd: number(),
      nextEnd: number(),
    })),
  }));
}

describe('reservation records as strings', () => {
  it('decode random reservations exactly', () => {
    for (const r of fuzzed(7, 5000)) {
      const d = decodeRecord(encodeRecord(r, r.entries[0]?.cost ?? 1));
      expect(d.reservation).toStrictEqual(r);
      expect(Object.is(d.expiresAt, r.entries[0]?.cost ?? 1)).toBe(true);
    }
  });

  it('decode what was encoded, exactly', () => {
    for (const r of reservations())
      for (const at of [0, -0, 1, 1796327700771, 2 ** 53 - 1, 0.5, Number.POSITIVE_INFINITY]) {
        const d = decodeRecord(encodeRecord(r, at));
        expect(d.reservation).toStrictEqual(r);
        expect(Object.is(d.expiresAt, at)).toBe(true);
        for (const [i, e] of d.reservation.entries.entries())
          for (const f of ['index', 'capacity', 'period', 'cost', 'windowEnd', 'nextEnd'] as const)
            expect(Object.is(e[f], r.entries[i][f])).toBe(true);
      }
  });

  it('mark a record settled: id and record kept, no entries, the sooner expiry', () => {
    for (const r of reservations()) {
      const s = encodeRecord(r, 5000);
      const mark = { ...r, settled: true, entries: [] };
      expect(decodeRecord(settledRecord(s, 3000))).toStrictEqual({ reservation: mark, expiresAt: 3000 });
      expect(decodeRecord(settledRecord(s, 9000))).toStrictEqual({ reservation: mark, expiresAt: 5000 });
    }
  });

  it('the ledger reads back each record until it expires, is evicted or settled', () => {
    const l = new MemoryLedger();
    const rs = reservations();
    const max = rs.length - 2;
    for (const [i, r] of rs.entries()) l.record(`v:${i}`, r, 10_000 + i, max);
    expect(l.dropped).toBe(2);
    // oldest first at the bound
    expect(l.reservation('v:0', 0)).toBeUndefined();
    expect(l.reservation('v:1', 0)).toBeUndefined();
    for (let i = 2; i < rs.length; i++) expect(l.reservation(`v:${i}`, 0)).toStrictEqual(rs[i]);
    // a read returns a copy: changing it changes nothing held
    l.reservation('v:2', 0)!.entries[0].cost = -1;
    expect(l.reservation('v:2', 0)).toStrictEqual(rs[2]);
    // settled: kept until the sooner of its expiry and `until`, then forgotten
    l.settled('v:2', 5000);
    l.settled('v:3', 50_000);
    l.settled('v:nothing', 5000);
    expect(l.reservation('v:2', 4999)).toStrictEqual({ ...rs[2], settled: true, entries: [] });
    expect(l.reservation('v:2', 5000)).toBeUndefined();
    expect(l.reservation('v:3', 10_002)).toStrictEqual({ ...rs[3], settled: true, entries: [] });
    expect(l.reservation('v:3', 10_003)).toBeUndefined();
    // expiry: record i expires at 10,000 + i; a sweep drops the expired ones
    l.sweep(10_010);
    expect(l.size).toBe(rs.length - 11);
    for (let i = 4; i < rs.length; i++)
      if (i <= 10) expect(l.reservation(`v:${i}`, 0)).toBeUndefined();
      else expect(l.reservation(`v:${i}`, 0)).toStrictEqual(rs[i]);
    // the bound counts what is held: room again for as many as were dropped
    const before = l.dropped;
    for (let i = l.size; i < max; i++) l.record(`w:${i}`, rs[2], 20_000, max);
    expect(l.dropped).toBe(before);
    l.record('w:last', rs[2], 20_000, max);
    expect(l.dropped).toBe(before + 1);
    expect(l.reservation('v:11', 0)).toBeUndefined();
    expect(l.reservation('v:12', 0)).toStrictEqual(rs[12]);
    expect(l.reservation('w:last', 0)).toStrictEqual(rs[2]);
  });

  it('drops oldest first through any mix of records, reads, settlements, sweeps and bounds (a model)', () => {
    const r = rng(11);
    const l = new MemoryLedger();
    // the model: keys in age order (a re-recorded key keeps its place, as in a Map), their expiry
    const model = new Map<string, number>();
    let dropped = 0;
    let max = 40;
    const res = (k: string) => ({
      id: k,
      record: `r${k}`,
      entries: [entry({ key: `t:${k}` })],
      settled: false,
    });
    for (let op = 0; op < 4000; op++) {
      const k = `v:${Math.floor(r() * 120)}`;
      const now = Math.floor(r() * 1000);
      const x = r();
      if (x < 0.6) {
        if (r() < 0.02) max = 5 + Math.floor(r() * 60);
        const exp = now + Math.floor(r() * 2000);
        while (model.size >= max) {
          model.delete(model.keys().next().value as string);
          dropped++;
        }
        model.set(k, exp);
        l.record(k, res(k), exp, max);
      } else if (x < 0.75) {
        if (model.has(k)) model.set(k, Math.min(model.get(k)!, now + 100));
        l.settled(k, now + 100);
      } else if (x < 0.95) {
        const held = model.get(k);
        if (held !== undefined && held <= now) model.delete(k);
        expect(l.reservation(k, now)?.id).toBe(held !== undefined && held > now ? k : undefined);
      } else {
        for (const [mk, exp] of model) if (exp <= now) model.delete(mk);
        l.sweep(now);
      }
      expect(l.dropped).toBe(dropped);
      expect(l.size).toBe(model.size);
      for (const [mk] of model) expect(l.reservation(mk, Number.NEGATIVE_INFINITY)?.id).toBe(mk);
    }
  });
});
