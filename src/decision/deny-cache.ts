/**
 * A local cache of "denied until T" per plan shape (the same limits on the same keys), so repeat
 * offenders are answered without a Valkey round trip. Correct because T comes from the script: the
 * script reads the server's TIME after we send, so `sentAt + retryMs` is never later than the moment
 * the server would let that call fit; denied calls debit nothing, and other replicas can only debit —
 * so a cached "does not fit" is never wrong before T.
 *
 * The next call of an offender rarely costs the same (another prompt, another max_tokens), so a
 * cached answer also serves calls with other costs, entry by entry, from the levels the script
 * reported (integer costs only; anything else must cost the same as the cached call):
 *  - rolling window: the script reports ⌊level⌋; an integer cost fits iff ⌊level⌋ ≥ cost. On an
 *    exceeded entry, the script's exact retry for the cached cost is shifted by the refill time of the
 *    cost difference (Δcost · window / capacity), later for a costlier call, earlier for a cheaper one.
 *  - calendar quota: remaining = capacity − used (exact); blocked until the window's end.
 * The call is denied from the cache only if every candidate has a (non-shadow) entry that provably
 * does not fit yet; otherwise — a cheaper call that may fit now, a call that can never fit — it asks
 * Valkey. (Keys deleted by hand in Valkey are not seen until T.)
 */
import type { CheckPlan, CheckResult, EntryResult } from '../store/types.js';
import { EntryKind, EntryStatus, Outcome } from '../store/types.js';

interface Entry {
  until: number;
  sentAt: number;
  costs: number[];
  result: CheckResult;
}

const MAX_ENTRIES = 10_000;
/**
 * Longest a deny is reused. Settlement refunds (src/settle/) free budget before T: this replica forgets
 * the denies on the keys it settles at once (`forget`), and a refund settled by another replica is
 * seen here within this bound.
 */
export const DENY_CACHE_MAX_HOLD_MS = 1000;

export class DenyCache {
  private readonly map = new Map<string, Entry>();
  /** Limit key → the cached plans naming it (for `forget`; may name entries already gone). */
  private readonly byKey = new Map<string, Set<string>>();
  hits = 0;

  /** Identity of a plan's limits (not its costs). undefined = not cacheable (queue, dry run). */
  static keyOf(plan: CheckPlan): string | undefined {
    if (plan.queue || plan.dryRun) return undefined;
    // every key but the reservation record's (a new one per call)
    const r = plan.reservation?.key;
    let k = '';
    for (let i = 0; i < plan.keys.length; i++) if (i !== r) k += `${plan.keys[i]}\n`;
    for (const cand of plan.candidates) {
      k += '|';
      for (const e of cand)
        k += `${e.key},${e.kind},${e.capacity},${e.period},${e.tzOffsetMin},${e.shadow ? 1 : 0},${e.downgradeAt};`;
    }
    return k;
  }

  private static costs(plan: CheckPlan): number[] {
    const out: number[] = [];
    for (const cand of plan.candidates) for (const e of cand) out.push(e.cost);
    return out;
  }

  /**
   * A still-valid cached deny for this plan, aged to now; undefined on a miss (no entry, expired, or
   * this call's costs do not prove a deny: see the file comment). Builds no key while the cache is empty.
   */
  lookup(plan: CheckPlan, now = performance.now()): CheckResult | undefined {
    if (this.map.size === 0) return undefined;
    const key = DenyCache.keyOf(plan);
    if (key === undefined) return undefined;
    const e = this.map.get(key);
    if (!e) return undefined;
    if (now >= e.until) {
      this.map.delete(key);
      return undefined;
    }
    const elapsed = Math.max(0, Math.floor(now - e.sentAt));
    const r = e.result;
    let k = 0;
    let retry = -1;
    const candidates: EntryResult[][] = [];
    for (let c = 0; c < plan.candidates.length; c++) {
      const out: EntryResult[] = [];
      let blocked = false;
      let candRetry = 0;
      for (let j = 0; j < plan.candidates[c].length; j++) {
        const pe = plan.candidates[c][j];
        const was = r.candidates[c][j];
        const e0 = entryFor(pe, was, e.costs[k++]);
        if (!e0) return undefined;
        if (!pe.shadow && e0.result.status === EntryStatus.Exceeded) {
          if (e0.blockedMs > elapsed) blocked = true;
          if (e0.result.retryMs > candRetry) candRetry = e0.result.retryMs;
        }
        const x = e0.result;
        out.push({ ...x, retryMs: x.retryMs > 0 ? Math.max(1, x.retryMs - elapsed) : x.retryMs });
      }
      if (!blocked) return undefined; // this candidate may fit now: Valkey decides
      if (retry < 0 || candRetry < retry) retry = candRetry;
      candidates.push(out);
    }
    this.hits++;
    return {
      outcome: Outcome.Denied,
      chosen: -1,
      retryMs: Math.max(1, retry - elapsed),
      nowMs: r.nowMs + elapsed,
      candidates,
    };
  }

  /** Remember a Valkey deny; `sentAt` is performance.now() taken just before the call was sent. */
  remember(plan: CheckPlan, result: CheckResult, sentAt: number): void {
    if (result.outcome !== Outcome.Denied || result.retryMs <= 0) return;
    for (const cand of result.candidates) for (const x of cand) if (x.status === EntryStatus.Never) return;
    const key = DenyCache.keyOf(plan);
    if (key === undefined) return;
    if (this.map.size >= MAX_ENTRIES) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.delete(key);
    const until = sentAt + Math.min(result.retryMs, DENY_CACHE_MAX_HOLD_MS);
    this.map.set(key, { until, sentAt, costs: DenyCache.costs(plan), result });
    if (this.byKey.size > 4 * MAX_ENTRIES) this.byKey.clear(); // stale sets: rebuilt as denies come
    const r = plan.reservation?.key;
    for (let i = 0; i < plan.keys.length; i++) {
      if (i === r) continue;
      const set = this.byKey.get(plan.keys[i]);
      if (set) set.add(key);
      else this.byKey.set(plan.keys[i], new Set([key]));
    }
  }

  /** Forget every cached deny that names one of `keys` (a settlement refunded them). */
  forget(keys: readonly string[]): void {
    if (this.map.size === 0) return;
    for (const k of keys) {
      const set = this.byKey.get(k);
      if (!set) continue;
      for (const planKey of set) this.map.delete(planKey);
      this.byKey.delete(k);
    }
  }

  clear(): void {
    this.map.clear();
    this.byKey.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

/**
 * One entry of a call with cost `cost` (from the plan), derived from the cached answer `was` for a call
 * that cost `cost0` on the same entry (both at the cached call's send time). `blockedMs`: how long the
 * entry provably does not fit this cost. undefined = cannot tell from the cache.
 */
function entryFor(
  pe: CheckPlan['candidates'][number][number],
  was: EntryResult,
  cost0: number,
): { blockedMs: number; result: EntryResult } | undefined {
  const cost = pe.cost;
  if (cost === cost0)
    return { blockedMs: was.status === EntryStatus.Exceeded ? was.retryMs : 0, result: was };
  if (!Number.isInteger(cost) || !Number.isInteger(cost0) || cost > pe.capacity) return undefined;
  const left = was.remaining; // rolling: ⌊level⌋; calendar: capacity − used
  if (left >= cost) {
    const below = pe.downgradeAt > 0 && left - cost < pe.downgradeAt;
    const status = below ? EntryStatus.BelowDowngrade : EntryStatus.Fits;
    return { blockedMs: 0, result: { ...was, status, retryMs: 0 } };
  }
  const status = EntryStatus.Exceeded;
  if (pe.kind === EntryKind.Calendar) {
    // does not fit before the window ends (debits only add to `used`)
    return { blockedMs: was.resetMs, result: { ...was, status, retryMs: was.resetMs } };
  }
  // rolling: level < cost (level < ⌊level⌋ + 1 ≤ cost); the refill rate is capacity per period
  const rate = pe.capacity / pe.period;
  if (was.status === EntryStatus.Exceeded) {
    // The script's retry for cost0 is exact to the ms: shift it by the refill time of the difference
    // (rounded towards a later Retry-After, and towards a shorter proven block).
    const shift = (cost - cost0) / rate;
    const retryMs = Math.max(1, was.retryMs + Math.ceil(shift));
    const blockedMs = cost > cost0 ? was.retryMs : Math.max(0, Math.floor(was.retryMs - 1 + shift));
    return { blockedMs, result: { ...was, status, retryMs } };
  }
  // it fitted cost0 but not this cost: only ⌊level⌋ is known
  const retryMs = Math.ceil((cost - left) / rate);
  const blockedMs = Math.max(0, Math.floor((cost - left - 1) / rate));
  return { blockedMs, result: { ...was, status, retryMs } };
}
