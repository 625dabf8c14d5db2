/**
 * (The queue tier needs Valkey: a plan's `queue` is ignored here and such calls are denied.)
 *
 * In-process store: the same algorithm as lua/check-limits.lua, in TypeScript, for single-replica use
 * and for `on_store_failure: local`. Answers are identical to the Valkey store's (one conformance suite).
 */
import { DEFAULT_MEMORY_MAX_KEYS, DEFAULT_MEMORY_MAX_RECORDS } from '../config/schema.js';
import { StoreFullError } from '../errors.js';
import { calendarEnd } from '../policy/calendar.js';
import { SETTLED_TTL_MS } from '../policy/plan-types.js';
import { adjustState } from './memory-adjust.js';
import { MemoryLedger } from './memory-ledger.js';
import { refilled, type SettleState, type State, settleEntry } from './memory-settle.js';
import {
  type AdjustRequest,
  type AdjustResult,
  type CheckPlan,
  type CheckResult,
  EntryKind,
  type EntryResult,
  EntryStatus,
  Outcome,
  type PlanEntry,
  type Reservation,
  type ReservedEntry,
  type SettleRequest,
  type SettleResult,
  type Store,
} from './types.js';

interface Evaluated {
  e: PlanEntry;
  fits: boolean;
  never: boolean;
  below: boolean;
  retry: number;
}

/** A key's level as of now. rolling: a = tokens left, b = now; calendar: a = used, b = window end ms. */
interface Level {
  a: number;
  b: number;
}
type Current = Map<number, Level>;

interface Candidate {
  evals: Evaluated[];
  /** Every non-shadow entry fits. */
  hard: boolean;
  /** Fits and none falls below its downgrade threshold. */
  soft: boolean;
  /** Some non-shadow entry can never fit. */
  never: boolean;
  retry: number;
}

/** The first candidate that fits softly (the last one: hard is enough), else the first that fits; -1 none. */
function choose(cands: Candidate[]): number {
  const n = cands.length;
  const chosen = cands.findIndex((c, i) => c.soft || (i === n - 1 && c.hard));
  return chosen >= 0 ? chosen : cands.findIndex((c) => c.hard);
}

/** Keys the debit would add (distinct, not held yet). */
function freshKeys(data: Map<string, State>, plan: CheckPlan, evals: Evaluated[]): number {
  let n = 0;
  const seen = new Set<number>();
  for (const ev of evals) {
    if (!ev.fits || seen.has(ev.e.key)) continue;
    seen.add(ev.e.key);
    if (!data.has(plan.keys[ev.e.key])) n++;
  }
  return n;
}

// (Valkey 8 converts the script's numbers with a shortest round-trip format, so the stored level is the
// exact double on both sides: nothing to mirror here.)

export class MemoryStore implements Store {
  readonly kind = 'memory' as const;
  private readonly data = new Map<string, State>();
  private readonly sweeper: NodeJS.Timeout;
  private anon = 0;
  /** Entries dropped at the bound (all of them worth nothing: bucket full again or window over). */
  evictions = 0;
  /** Calls refused because they needed a new key and no entry could be dropped (StoreFullError). */
  refusals = 0;
  private lastRoomSweep = Number.NEGATIVE_INFINITY;
  /** Concurrency slots and reservation records (memory-ledger.ts). */
  private readonly ledger = new MemoryLedger();

  /**
   * `clock` is injectable for tests; `divisor` scales every capacity down (per-replica share in local
   * mode); `maxKeys` bounds the entries held (store.memory_max_keys).
   */
  constructor(
    private readonly clock: () => number = Date.now,
    private readonly divisor = 1,
    private maxKeys = DEFAULT_MEMORY_MAX_KEYS,
  ) {
    this.sweeper = setInterval(() => this.sweep(), 10_000);
    this.sweeper.unref();
  }

  get size(): number {
    return this.data.size;
  }

  /** Config reload: a new bound (entries above it stay until they expire; no new ones meanwhile). */
  setMaxKeys(n: number): void {
    this.maxKeys = n;
  }

  /** Reservation records held at once (store.memory_max_records); the oldest is dropped past it. */
  private maxRecords = DEFAULT_MEMORY_MAX_RECORDS;

  setMaxRecords(n: number): void {
    this.maxRecords = n;
  }

  /**
   * Room for `fresh` new entries, or a StoreFullError. Only entries whose state equals no state are
   * ever dropped: a rolling bucket that has refilled to full (its cost refilled: `freeAt`) or a
   * calendar window that has ended. Spend is never forgotten, so no tenant gets fresh budget from eviction.
   * That sweep runs at most once a second at the bound; in between, calls needing a new key are
   * refused at once (O(1)), and answered per on_store_failure.
   */
  private makeRoom(fresh: number, now: number): void {
    if (this.data.size + fresh <= this.maxKeys) return;
    if (now - this.lastRoomSweep >= 1000 || now < this.lastRoomSweep) {
      this.lastRoomSweep = now;
      this.evictions += this.sweep(now, true);
    }
    if (this.data.size + fresh <= this.maxKeys) return;
    this.refusals++;
    throw new StoreFullError(this.maxKeys);
  }

  async check(plan: CheckPlan): Promise<CheckResult> {
    return this.checkSync(plan);
  }

  checkSync(plan: CheckPlan): CheckResult {
    const now = Math.floor(this.clock());
    /** Each key's state as of now (refilled / window rolled over), read once per call and debited here. */
    const cur: Current = new Map();
    const cands = plan.candidates.map((entries) => this.evaluate(plan, entries, cur, now));
    const chosen = choose(cands);
    if (chosen >= 0 && !plan.dryRun) {
      this.debit(plan, cands[chosen].evals, cur, now);
      this.reserve(plan, chosen, cands[chosen].evals, cur, now);
    }
    let outcome = Outcome.Allowed;
    let retryMs = 0;
    if (chosen < 0) {
      outcome = Outcome.Never;
      retryMs = -1;
      for (const c of cands) {
        if (!c.never && (retryMs < 0 || c.retry < retryMs)) {
          retryMs = c.retry;
          outcome = Outcome.Denied;
        }
      }
    }
    const candidates: EntryResult[][] = cands.map((c, ci) =>
      c.evals.map((ev) =>
        this.result(ev, cur.get(ev.e.key)!, ci === chosen && ev.fits && !!plan.dryRun, now),
      ),
    );
    return { outcome, chosen, retryMs, nowMs: now, candidates };
  }

  /** `e`'s key as of now: a rolling bucket refilled for the time elapsed, a calendar window rolled over. */
  private current(plan: CheckPlan, cur: Current, e: PlanEntry, cap: number, now: number): Level {
    let s = cur.get(e.key);
    if (s) return s;
    const st = this.data.get(plan.keys[e.key]);
    const live = st && st.expiresAt > now ? st : undefined;
    if (e.kind === EntryKind.Concurrent) {
      const { held, first } = this.ledger.slotsRead(plan.keys[e.key], now);
      s = { a: held, b: first };
    } else if (e.kind === EntryKind.Rolling) {
      const level = live ? refilled(live, cap, e.period, now) : cap;
      s = { a: level, b: now };
    } else {
      s =
        live && now < live.b
          ? { a: live.a, b: live.b }
          : { a: 0, b: calendarEnd(now, e.period, e.tzOffsetMin, e.zoneEnd ?? 0, e.zoneNext ?? 0) };
    }
    cur.set(e.key, s);
    return s;
  }

  /** One candidate: does each entry fit, and is the candidate hard-fitting, soft-fitting, never? */
  private evaluate(plan: CheckPlan, entries: PlanEntry[], cur: Current, now: number): Candidate {
    let hard = true;
    let soft = true;
    let never = false;
    let retry = 0;
    const evals: Evaluated[] = entries.map((e) => {
      const cap = this.cap(e.capacity);
      const ev = this.evaluateEntry(e, cap, this.current(plan, cur, e, cap, now), now);
      if (!e.shadow) {
        if (!ev.fits) {
          hard = false;
          if (ev.never) never = true;
          else if (ev.retry > retry) retry = ev.retry;
        } else if (ev.below) soft = false;
      }
      return ev;
    });
    return { evals, hard, soft: soft && hard, never, retry };
  }

  /** Whether `e` fits its key's level `s` (`cap`: its capacity, this replica's share), and when it would. */
  private evaluateEntry(e: PlanEntry, cap: number, s: Level, now: number): Evaluated {
    let fits: boolean;
    let avail: number;
    let r: number;
    if (e.kind === EntryKind.Rolling) {
      fits = s.a >= e.cost;
      avail = s.a;
      r = fits ? 0 : Math.ceil(((e.cost - s.a) * e.period) / cap);
      // floating point: waiting exactly r ms must be enough (mirrors the Lua script)
      if (!fits && s.a + (r * cap) / e.period < e.cost) r += 1;
    } else if (e.kind === EntryKind.Concurrent) {
      avail = cap - s.a;
      fits = s.a + e.cost <= cap;
      r = fits ? 0 : MemoryLedger.slotsRetry(s.b, now);
    } else {
      avail = cap - s.a;
      fits = s.a + e.cost <= cap;
      r = fits ? 0 : s.b - now;
    }
    // "Never" is judged against the full limit: in local mode (divisor > 1) a call over this
    // replica's share but within the limit fits once the store is back, so it is retryable, and
    // its Retry-After is when the local share is whole again (at least 1 s).
    const nev = e.cost > e.capacity;
    if (!fits && !nev && e.cost > cap)
      r = Math.max(1000, e.kind === EntryKind.Rolling ? Math.ceil(((cap - s.a) * e.period) / cap) : r);
    const downAt = e.downgradeAt / this.divisor; // the threshold scales with the per-replica share
    const below = fits && downAt > 0 && avail - e.cost < downAt;
    return { e, fits, never: nev, below, retry: r };
  }

  /** Debit the chosen candidate's fitting entries (room for new keys is made first, or StoreFullError). */
  private debit(plan: CheckPlan, evals: Evaluated[], cur: Current, now: number): void {
    if (this.data.size + evals.length > this.maxKeys) this.makeRoom(freshKeys(this.data, plan, evals), now);
    for (const ev of evals) {
      if (!ev.fits) continue;
      const s = cur.get(ev.e.key)!;
      const key = plan.keys[ev.e.key];
      if (ev.e.kind === EntryKind.Concurrent) {
        if (ev.e.cost <= 0) continue; // a zero-cost probe holds no slot (lua/check-limits.lua)
        s.a += ev.e.cost;
        if (s.b === 0) s.b = now + ev.e.period;
        this.ledger.slotsTake(key, plan.reservation?.id ?? `x${now}:${this.anon++}`, now + ev.e.period);
        continue;
      }
      const rolling = ev.e.kind === EntryKind.Rolling;
      s.a += rolling ? -ev.e.cost : ev.e.cost;
      const b = rolling ? now : s.b;
      const expiresAt = rolling ? now + ev.e.period : s.b + 1000;
      const cap = this.cap(ev.e.capacity);
      const freeAt = rolling ? now + Math.ceil(((cap - s.a) * ev.e.period) / cap) : s.b;
      // Update in place: a state object lives as long as its key, so replacing it per call would
      // promote a stream of short-lived objects into the old generation.
      const st = this.data.get(key);
      if (st) {
        st.a = s.a;
        st.b = b;
        st.expiresAt = expiresAt;
        st.freeAt = freeAt;
      } else this.data.set(key, { a: s.a, b, expiresAt, freeAt });
    }
  }

  /** What one entry reports (`dryChosen`: a dry run's chosen fitting entry, shown as if debited). */
  private result(ev: Evaluated, s: Level, dryChosen: boolean, now: number): EntryResult {
    const cap = this.cap(ev.e.capacity);
    const status = ev.never
      ? EntryStatus.Never
      : !ev.fits
        ? EntryStatus.Exceeded
        : ev.below
          ? EntryStatus.BelowDowngrade
          : EntryStatus.Fits;
    let remaining: number;
    let resetMs: number;
    if (ev.e.kind === EntryKind.Rolling) {
      remaining = dryChosen ? s.a - ev.e.cost : s.a;
      resetMs = Math.ceil(((cap - remaining) * ev.e.period) / cap);
    } else if (ev.e.kind === EntryKind.Concurrent) {
      remaining = cap - s.a - (dryChosen ? ev.e.cost : 0);
      resetMs = remaining <= 0 && s.b > 0 ? MemoryLedger.slotsRetry(s.b, now) : 0;
    } else {
      remaining = cap - s.a - (dryChosen ? ev.e.cost : 0);
      resetMs = s.b - now;
    }
    return { status, remaining: Math.floor(remaining), resetMs, retryMs: ev.never ? -1 : ev.retry };
  }

  private cap(capacity: number): number {
    return this.divisor === 1 ? capacity : Math.max(1, Math.floor(capacity / this.divisor));
  }

  /**
   * Drop the entries that have expired (`atBound`: also those whose state already equals no state:
   * bucket full again, window over); returns how many.
   */
  private sweep(now = this.clock(), atBound = false): number {
    let n = 0;
    if (!atBound) this.ledger.sweep(now);
    for (const [k, v] of this.data)
      if (v.expiresAt <= now || (atBound && v.freeAt <= now)) {
        this.data.delete(k);
        n++;
      }
    return n;
  }

  /** Record the chosen candidate's debits under the plan's reservation key (lua/check-limits.lua). */
  private reserve(plan: CheckPlan, chosen: number, evals: Evaluated[], cur: Current, now: number): void {
    const r = plan.reservation;
    if (!r) return;
    const entries: ReservedEntry[] = [];
    evals.forEach((ev, index) => {
      if (!ev.fits) return;
      const { e } = ev;
      const cal = e.kind === EntryKind.Calendar;
      const windowEnd = cal ? cur.get(e.key)!.b : 0;
      // the end of the window after it (lua/check-limits.lua next_end)
      const nextEnd = cal
        ? calendarEnd(windowEnd, e.period, e.tzOffsetMin, e.zoneEnd ?? 0, e.zoneNext ?? 0)
        : 0;
      const key = plan.keys[e.key];
      entries.push({
        index,
        key,
        kind: e.kind,
        capacity: e.capacity,
        period: e.period,
        cost: e.cost,
        windowEnd,
        nextEnd,
      });
    });
    const reservation = { id: r.id, record: r.records[chosen], entries, settled: false };
    this.ledger.record(plan.keys[r.key], reservation, now + r.ttlMs, this.maxRecords);
  }

  async reservation(key: string): Promise<Reservation | undefined> {
    return this.ledger.reservation(key, Math.floor(this.clock()));
  }

  /** lua/settle-reservation.lua, in TypeScript. */
  async settle(req: SettleRequest): Promise<SettleResult> {
    const now = Math.floor(this.clock());
    const held = this.ledger.reservation(req.key, now);
    if (held?.settled) return { outcome: 'duplicate', remaining: [] };
    if (!held) return { outcome: 'missing', remaining: [] };
    const state: SettleState = { data: this.data, ledger: this.ledger, cap: (c) => this.cap(c) };
    const remaining = held.entries.map((e, i) =>
      settleEntry(state, e, e.cost - Math.max(0, Math.ceil(req.actual[i])), held.id, now),
    );
    this.ledger.settled(req.key, now + SETTLED_TTL_MS);
    return { outcome: 'settled', remaining };
  }

  /** lua/adjust-limit.lua, in TypeScript (memory-adjust.ts). */
  async adjust(req: AdjustRequest): Promise<AdjustResult> {
    return adjustState(this.data, this.ledger, req, this.cap(req.entry.capacity), Math.floor(this.clock()));
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }
}
