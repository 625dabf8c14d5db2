/**
 * The one atomic store call: answered from the deny cache when it can be, else through the guarded
 * store (resilience/guarded-store.ts: in-flight gate, breaker, overload budget); when the store fails,
 * store.on_store_failure decides — deny (503), allow (degraded), or local (this replica's share).
 */
import type { Config } from '../config/types.js';
import { OverloadedError, StoreFullError } from '../errors.js';
import type { BuiltPlan } from '../policy/plan.js';
import type { GuardedStore } from '../resilience/guarded-store.js';
import type { CheckResult } from '../store/types.js';
import { allow, deny, errorBody } from './answer.js';
import type { DenyCache } from './deny-cache.js';
import { overloaded } from './overloaded.js';
import type { Decision, DecisionStats, Headers } from './types.js';

export interface StoreCall {
  cfg: Config;
  guard: GuardedStore;
  denyCache: DenyCache;
  built: BuiltPlan;
  /** performance.now() when the check arrived: server.overload_budget counts from here. */
  arrivedAt: number;
  stats: DecisionStats;
  marks: Headers;
  removeHeaders: string[];
  onOverloaded?: (stage: 'queued' | 'sent') => void;
}

/** The store's answer (`degraded`: from the local fallback), or the Decision when there is none. */
export type Stored = { result: CheckResult; degraded?: string } | { decision: Decision };

export async function callStore(c: StoreCall): Promise<Stored> {
  const { built, stats, denyCache } = c;
  // "Denied until T" answers from Valkey are reused without a round trip until T
  const cacheable = c.guard.shared && c.cfg.store.denyCache;
  const lookup = () => {
    const cached = cacheable ? denyCache.lookup(built.plan) : undefined;
    if (cached) stats.cached = true;
    return cached;
  };
  try {
    const cached = lookup();
    if (cached) return { result: cached };
    const result = await c.guard.check(built.plan, c.arrivedAt + c.cfg.server.overloadBudgetMs, {
      recheck: lookup,
      replied: cacheable ? (r, sentAt) => denyCache.remember(built.plan, r, sentAt) : undefined,
    });
    return { result };
  } catch (err) {
    return storeFailed(c, err);
  }
}

/** The check was shed (overloaded), or the store failed: store.on_store_failure. */
function storeFailed(c: StoreCall, err: unknown): Stored {
  const { built, marks, removeHeaders, stats } = c;
  if (err instanceof OverloadedError) {
    c.onOverloaded?.(err.stage);
    return { decision: overloaded(built, marks, removeHeaders, stats) };
  }
  // Valkey unreachable or slow, or the in-memory store at its bound (store.memory_max_keys)
  const why = err instanceof StoreFullError ? 'store-full' : 'store-unavailable';
  const policy = c.cfg.store.onStoreFailure;
  if (policy === 'deny') {
    const body = errorBody(
      'Rate limiter temporarily unavailable; try again shortly.',
      'server_error',
      'rate_limiter_unavailable',
    );
    return { decision: deny('store-unavailable', 503, {}, body, stats) };
  }
  const local = policy === 'local' ? c.guard.checkLocal(built.plan) : undefined;
  if (!local) {
    const h = { ...marks, 'x-tollgate-degraded': why };
    return { decision: allow('degraded', h, { ...h }, removeHeaders, stats) };
  }
  return { result: local, degraded: `${why};local` };
}
