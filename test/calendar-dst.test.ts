import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { computeZonedWindow, zonedWindow } from '../src/policy/calendar.js';
import { buildPlan } from '../src/policy/plan.js';
import { keyNames } from '../src/store/keys.js';
import { checkLimits } from '../src/store/lua.generated.js';
import { MemoryStore } from '../src/store/memory.js';
import { type CheckPlan, EntryKind, type PlanEntry } from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const SEED = 19_010;
const ZONES = [
  'Europe/Berlin',
  'America/New_York',
  'Australia/Lord_Howe',
  'Asia/Kolkata',
  'America/Santiago',
];

/** The local calendar key of an instant in a zone, straight from Intl (independent of calendar.ts). */
const fmts = new Map<string, Intl.DateTimeFormat>();
function local(t: number, tz: string) {
  let f = fmts.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      weekday: 'short',
    });
    fmts.set(tz, f);
  }
  const p = Object.fromEntries(f.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
  return { y: +p.year, m: +p.month, d: +p.day, h: +p.hour, wd: p.weekday };
}
/** Which window an instant is in: the local hour, day, ISO week (its Monday) or month. */
function key(t: number, tz: string, unit: number): string {
  const l = local(t, tz);
  if (unit === 1) return `${l.y}-${l.m}-${l.d} ${l.h}`;
  if (unit === 2) return `${l.y}-${l.m}-${l.d}`;
  if (unit === 4) return `${l.y}-${l.m}`;
  const back = ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'].indexOf(l.wd);
  const monday = new Date(Date.UTC(l.y, l.m - 1, l.d - back));
  return monday.toISOString().slice(0, 10);
}

function expectTrueBoundary(t: number, tz: string, unit: number): void {
  const w = computeZonedWindow(t, unit, tz);
  const k = key(t, tz, unit);
  const what = `${tz} unit ${unit} at ${new Date(t).toISOString()}: end ${new Date(w.end).toISOString()}`;
  expect(w.end, what).toBeGreaterThan(t);
  // the window holds to its last minute and the key changes exactly at its end
  expect(key(w.end - 60_000, tz, unit), what).toBe(k);
  expect(key(w.end - 1, tz, unit), what).toBe(k);
  expect(key(w.end, tz, unit), what).not.toBe(k);
  // the next window, likewise
  expect(w.next).toBeGreaterThan(w.end);
  expect(key(w.next - 1, tz, unit), what).toBe(key(w.end, tz, unit));
  expect(key(w.next, tz, unit), what).not.toBe(key(w.end, tz, unit));
}

/** Instants of each offset change of a zone in a year (to the minute), found with Intl. */
function transitions(tz: string, year: number): number[] {
  const fmt = new Intl.DateTimeFormat('en-US', { timeZone: tz, timeZoneName: 'longOffset' });
  const off = (t: number) => {
    const l = fmt.formatToParts(new Date(t)).find((p) => p.type === 'timeZoneName')!.value;
    return l;
  };
  const out: number[] = [];
  let t = Date.UTC(year, 0, 1);
  const end = Date.UTC(year + 1, 0, 1);
  let prev = off(t);
  for (; t < end; t += 3_600_000 * 6) {
    const o = off(t + 3_600_000 * 6);
    if (o !== prev) {
      let lo = t;
      let hi = t + 3_600_000 * 6;
      while (hi - lo > 60_000) {
        const mid = lo + Math.floor((hi - lo) / 120_000) * 60_000;
        if (off(mid) === prev) lo = mid;
        else hi = mid;
      }
      out.push(hi);
      prev = o;
    }
  }
  return out;
}

describe('zoned calendar windows against Intl', () => {
  it('random instants 2000–2100, every unit, several zones: the end is the true next boundary', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) }),
        fc.constantFrom(...ZONES),
        fc.constantFrom(1, 2, 3, 4),
        (t, tz, unit) => expectTrueBoundary(t, tz, unit),
      ),
      { seed: SEED, numRuns: 1500 },
    );
  });

  it('around both transitions of each zone (spring forward and fall back), 2000–2100', () => {
    let checked = 0;
    for (const tz of ZONES) {
      for (const year of [2000, 2024, 2026, 2057, 2099]) {
        const ts = transitions(tz, year);
        if (tz !== 'Asia/Kolkata') expect(ts.length, `${tz} ${year}`).toBeGreaterThanOrEqual(2);
        for (const tr of ts)
          for (const dt of [-25 * 3_600_000, -3_600_000, -60_000, -1, 0, 1, 60_000, 1_800_000, 3_600_000])
            for (const unit of [1, 2, 3, 4]) {
              expectTrueBoundary(tr + dt, tz, unit);
              checked++;
            }
      }
    }
    expect(checked).toBeGreaterThan(1000);
  });

  it('a Berlin daily window that starts before the DST change ends at local midnight, not 01:00 or 23:00', () => {
    // 2026-03-28 12:00 CET: the window ends 2026-03-29 00:00 CET = 23:00 UTC (the change is at 02:00 on the 29th)
    const spring = zonedWindow(Date.UTC(2026, 2, 28, 11), 2, 'Europe/Berlin');
    expect(new Date(spring.end).toISOString()).toBe('2026-03-28T23:00:00.000Z');
    expect(new Date(spring.next).toISOString()).toBe('2026-03-29T22:00:00.000Z'); // a 23-hour day
    const fall = zonedWindow(Date.UTC(2026, 9, 24, 11), 2, 'Europe/Berlin');
    expect(new Date(fall.end).toISOString()).toBe('2026-10-24T22:00:00.000Z');
    expect(new Date(fall.next).toISOString()).toBe('2026-10-25T23:00:00.000Z'); // a 25-hour day
    // monthly across the change: April starts at 00:00 CEST
    const month = zonedWindow(Date.UTC(2026, 2, 10), 4, 'Europe/Berlin');
    expect(new Date(month.end).toISOString()).toBe('2026-03-31T22:00:00.000Z');
  });
});

describe('a zoned daily quota over a DST change (policy → memory store)', () => {
  it.each([
    ['spring forward', Date.UTC(2026, 2, 28, 23, 30), '2026-03-29T22:00:00.000Z'],
    ['fall back', Date.UTC(2026, 9, 25, 0, 30), '2026-10-25T23:00:00.000Z'],
  ])('%s: the window that contains the change ends at the next local midnight', (_w, t, end) => {
    const cfg = parseConfigText(
      'limits:\n  - { name: berlin, per: tenant, requests: 2, reset: daily, timezone: Europe/Berlin }\n',
    );
    const cost = {
      model: 'm',
      config: cfg.defaultModel,
      promptTokens: 1,
      outputTokens: 1,
      micros: 0,
    };
    const store = new MemoryStore(() => t);
    const { plan } = buildPlan(cfg, { tenant: 'a' }, [cost], keyNames, t);
    const r = store.checkSync(plan);
    void store.close();
    expect(new Date(r.nowMs + r.candidates[0][0].resetMs).toISOString()).toBe(end);
  });
});

describe('the memory store and the Lua script use the same zoned end', () => {
  let vk: TestValkey;
  let vs: ValkeyStore;
  beforeAll(async () => {
    vk = await startValkey();
    vs = new ValkeyStore({ url: vk.url, timeoutMs: 2000 });
    await vs.connect();
  });
  afterAll(async () => {
    await vs?.close();
    await vk?.close();
  });

  const entry = (over: Partial<PlanEntry>): PlanEntry => ({
    key: 0,
    kind: EntryKind.Calendar,
    capacity: 10,
    period: 2,
    tzOffsetMin: 60,
    cost: 1,
    shadow: false,
    downgradeAt: 0,
    ...over,
  });

  it('calendar_end in the Lua script picks the same end as calendarEnd for random instants', async () => {
    const src = checkLimits.source; // assembled from lua/check-limits.lua and lua/includes/
    const fns =
      /local function window_end\([\s\S]*?\nend\n[\s\S]*?local function calendar_end\([\s\S]*?\nend\n/.exec(
        src,
      )?.[0];
    expect(fns).toBeDefined();
    const script = `${fns}\nlocal out = {}\nfor i = 1, #ARGV, 4 do out[#out + 1] = calendar_end(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), 0, tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])) end\nreturn out`;
    const samples = fc.sample(
      fc.record({
        t: fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) }),
        tz: fc.constantFrom(...ZONES),
        unit: fc.constantFrom(1, 2, 3, 4),
        skew: fc.constantFrom(0, 0, 1, 1),
      }),
      { seed: SEED, numRuns: 600 },
    );
    const args: number[] = [];
    const expected: number[] = [];
    for (const s of samples) {
      const w = computeZonedWindow(s.t, s.unit, s.tz);
      // the store's clock: the caller's, or already past the first end (a store clock ahead)
      const now = s.skew ? w.end + 1 : s.t;
      args.push(now, s.unit, w.end, w.next);
      expected.push(s.skew ? w.next : w.end);
    }
    const got = (await vk.client.eval(script, 0, ...args)) as number[];
    expect(got).toEqual(expected);
  });

  it('a zoned quota keyed now in Valkey and in memory ends at the zone’s boundary (not a fixed offset)', async () => {
    const now = Date.now();
    for (const tz of ZONES) {
      const w = zonedWindow(now, 2, tz);
      // the boundaries travel with the plan: a deliberately odd pair proves the stores use them
      for (const [end, next] of [
        [w.end, w.next],
        [now + 123_457, now + 9_999_999],
      ]) {
        const k = `dst:${tz}:${end}:${Math.random()}`;
        const plan: CheckPlan = { keys: [k], candidates: [[entry({ zoneEnd: end, zoneNext: next })]] };
        const mem = new MemoryStore();
        const [a, b] = [mem.checkSync(plan), await vs.check(plan)];
        await mem.close();
        expect(Number(await vk.client.hget(k, 'e'))).toBe(end);
        expect(Math.abs(a.nowMs + a.candidates[0][0].resetMs - end)).toBeLessThanOrEqual(0);
        expect(b.nowMs + b.candidates[0][0].resetMs).toBe(end);
      }
    }
  });
});
