/**
 * lua/adjust-limit.lua in TypeScript, for the in-memory store: an operator's credit or reset of one
 * limit's state for one scope. `MemoryState` is the memory store's per-key state (memory.ts).
 */
import { calendarEnd } from '../policy/calendar.js';
import type { MemoryLedger } from './memory-ledger.js';
import { refilled, type State } from './memory-settle.js';
import { type AdjustRequest, type AdjustResult, EntryKind } from './types.js';

/** The memory store's per-key state (memory-settle.ts). */
export type MemoryState = State;

/** Apply `req` (`cap`: the capacity as this store enforces it) at `now`; mirrors the Lua script. */
export function adjustState(
  data: Map<string, MemoryState>,
  ledger: MemoryLedger,
  req: AdjustRequest,
  cap: number,
  now: number,
): AdjustResult {
  const e = req.entry;
  const st = data.get(req.key);
  const live = st && st.expiresAt > now ? st : undefined;
  const put = (s: MemoryState) => (st ? Object.assign(st, s) : data.set(req.key, s));
  if (e.kind === EntryKind.Concurrent) {
    if (req.op === 'credit') throw new Error('adjust: a concurrency limit takes no credits');
    for (const [id] of ledger.slotsHeld(req.key)) ledger.slotsRelease(req.key, id, now);
    return { remaining: cap, resetMs: 0, nowMs: now };
  }
  if (e.kind === EntryKind.Rolling) {
    let level = live ? refilled(live, cap, e.period, now) : cap;
    const after = req.op === 'credit' ? Math.min(cap, level + req.amount) : cap;
    if (after !== level) {
      const freeAt = now + Math.ceil(((cap - after) * e.period) / cap);
      put({ a: after, b: now, expiresAt: Math.max(live?.expiresAt ?? 0, now + e.period, freeAt), freeAt });
      level = after;
    }
    return { remaining: Math.floor(level), resetMs: Math.ceil(((cap - level) * e.period) / cap), nowMs: now };
  }
  const current = live && now < live.b;
  const end = current ? live.b : calendarEnd(now, e.period, e.tzOffsetMin, e.zoneEnd ?? 0, e.zoneNext ?? 0);
  let used = current ? live.a : 0;
  const next = req.op === 'credit' ? used - req.amount : 0;
  if (next !== used) {
    used = next;
    put({ a: used, b: end, expiresAt: end + 1000, freeAt: end });
  }
  return { remaining: Math.floor(cap - used), resetMs: end - now, nowMs: now };
}
