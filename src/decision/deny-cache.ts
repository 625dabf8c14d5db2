/**
 * A local cache of "denied until T" per plan, so repeat offenders (the same call again) are answered
 * without a Valkey round trip. Correct because T comes from the script: the script reads the server's
 * TIME after we send, so `sentAt + retryMs` is never later than the moment the server would let the
 * same call fit; denied calls debit nothing, and other replicas can only debit — so a cached deny is
 * never wrong before T.
 * (Keys deleted by hand in Valkey are not seen until T.)
 */
import type { CheckPlan, CheckResult } from '../store/types.js';
import { Outcome } from '../store/types.js';

interface Entry {
  until: number;
  sentAt: number;
  costs: number[];
  result: CheckResult;
}

const MAX_ENTRIES = 10_000;

export class DenyCache {
  private readonly map = new Map<string, Entry>();
  hits = 0;

  /** Identity of a plan's limits (not its costs). undefined = not cacheable (queue, dry run). */
  static keyOf(plan: CheckPlan): string | undefined {
    if (plan.queue || plan.dryRun) return undefined;
    let k = plan.keys.join('\n');
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

  /** A still-valid cached deny for this plan, aged to now; undefined on a miss. */
  get(key: string, plan: CheckPlan, now = performance.now()): CheckResult | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (now >= e.until) {
      this.map.delete(key);
      return undefined;
    }
    const costs = DenyCache.costs(plan);
    // Only the very same call (same costs on every limit): a costlier one could be "never fits" or
    // need longer, and the cached retry time would be wrong for it.
    for (let i = 0; i < costs.length; i++) if (costs[i] !== e.costs[i]) return undefined;
    this.hits++;
    const elapsed = Math.max(0, Math.floor(now - e.sentAt));
    const r = e.result;
    return {
      outcome: r.outcome,
      chosen: r.chosen,
      retryMs: Math.max(1, r.retryMs - elapsed),
      nowMs: r.nowMs + elapsed,
      candidates: r.candidates.map((c) =>
        c.map((x) => ({ ...x, retryMs: x.retryMs > 0 ? Math.max(1, x.retryMs - elapsed) : x.retryMs })),
      ),
    };
  }

  /** Remember a Valkey deny; `sentAt` is performance.now() taken just before the call was sent. */
  put(key: string, plan: CheckPlan, result: CheckResult, sentAt: number): void {
    if (result.outcome !== Outcome.Denied || result.retryMs <= 0) return;
    if (this.map.size >= MAX_ENTRIES) {
      const oldest = this.map.keys().next().value;
      if (oldest !== undefined) this.map.delete(oldest);
    }
    this.map.delete(key);
    this.map.set(key, { until: sentAt + result.retryMs, sentAt, costs: DenyCache.costs(plan), result });
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}
