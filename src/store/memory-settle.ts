/**
 * The in-memory store's settlement (lua/settle-reservation.lua in TypeScript): one reserved entry
 * refunded or debited the difference, a concurrency slot released.
 */
import { EntryKind, type ReservedEntry } from '../policy/plan-types.js';
import type { MemoryLedger } from './memory-ledger.js';

export interface State {
  /** rolling: level; calendar: used */
  a: number;
  /** rolling: last update ms; calendar: window end ms */
  b: number;
  expiresAt: number;
  /**
   * From when this state equals no state (rolling: the bucket is full again; calendar: the window has
   * ended): the earliest it may be evicted at the bound without changing any answer.
   */
  freeAt: number;
}

/**
 * A rolling bucket's level at `now`: refilled since its last update, at most `cap`. A whole period
 * refills a bucket at or above zero exactly; one a settlement left below zero refills from there
 * (mirrors lua/includes/bucket.lua rolling_read).
 */
export function refilled(st: State, cap: number, period: number, now: number): number {
  const elapsed = Math.max(0, now - st.b);
  if (elapsed >= period && st.a >= 0) return cap;
  return Math.min(cap, st.a + (elapsed * cap) / period);
}

/** What a settlement reads and writes of the memory store. */
export interface SettleState {
  data: Map<string, State>;
  ledger: MemoryLedger;
  /** A limit's capacity as this store enforces it (its share in local mode). */
  cap(capacity: number): number;
}

/** One entry: refund `delta` (or debit −delta); returns what remains. */
export function settleEntry(
  m: SettleState,
  e: ReservedEntry,
  delta: number,
  id: string,
  now: number,
): number {
  const cap = m.cap(e.capacity);
  if (e.kind === EntryKind.Concurrent) return cap - m.ledger.slotsRelease(e.key, id, now);
  const st = m.data.get(e.key);
  const live = st && st.expiresAt > now ? st : undefined;
  if (e.kind === EntryKind.Calendar) return settleCalendar(m, e, live, cap, delta, now);
  const level = live ? refilled(live, cap, e.period, now) : cap;
  const after = Math.min(cap, level + delta);
  if (after === level) return Math.floor(level);
  const full = Math.ceil(((cap - after) * e.period) / cap);
  const freeAt = now + full;
  // below zero, the key must live until the bucket is full again (lua/includes/bucket.lua rolling_keep)
  const expiresAt = Math.max(
    live?.expiresAt ?? 0,
    now + (after < 0 ? full + Math.ceil(e.period / 4) : e.period),
  );
  if (st) Object.assign(st, { a: after, b: now, expiresAt, freeAt });
  else m.data.set(e.key, { a: after, b: now, expiresAt, freeAt });
  return Math.floor(after);
}

/** A calendar entry: refund in its window; an excess after it ended goes to the next one. */
function settleCalendar(
  m: SettleState,
  e: ReservedEntry,
  live: State | undefined,
  cap: number,
  delta: number,
  now: number,
): number {
  if (live && now < live.b && live.b === e.windowEnd) {
    live.a = Math.max(0, live.a - delta);
    return Math.floor(cap - live.a);
  }
  if (delta < 0 && now < e.nextEnd) {
    if (live && now < live.b && live.b === e.nextEnd) {
      live.a -= delta;
      return Math.floor(cap - live.a);
    }
    const st = { a: -delta, b: e.nextEnd, expiresAt: e.nextEnd + 1000, freeAt: e.nextEnd };
    const old = m.data.get(e.key);
    if (old) Object.assign(old, st);
    else m.data.set(e.key, st);
    return Math.floor(cap + delta);
  }
  return live && now < live.b ? Math.floor(cap - live.a) : cap;
}
