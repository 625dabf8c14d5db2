/**
 * The cache tier (the guide's tier 3, docs/cache.md): after the fallback models (a candidate that fits
 * wins), before the queue and the deny. `serve: when_exhausted` looks the answer up when no candidate
 * fits — or before the store call when the call may queue (the queue is appended atomically by the
 * check script: a call the cache can answer must not be queued); `serve: always` looks it up first.
 * A hit is answered from the Check as HTTP 200 (Envoy's denied_response: the upstream is not called),
 * debiting nothing, or (`cache.charge: requests`) counted against the request limits only.
 */
import type { AnswerCache, CacheHit, CacheQuery } from '../cache/cache.js';
import { hitResponse } from '../cache/hit.js';
import type { Config } from '../config/types.js';
import type { BuiltPlan } from '../policy/plan.js';
import type { GuardedStore } from '../resilience/guarded-store.js';
import { type CheckPlan, type CheckResult, Outcome } from '../store/types.js';
import { deny } from './answer.js';
import { type Row, rateLimitHeaders } from './headers.js';
import type { DecisionStats, DenyDecision, Headers } from './types.js';

export interface CacheTier {
  cfg: Config;
  cache: AnswerCache;
  q: CacheQuery;
  built: BuiltPlan;
  guard: GuardedStore;
  arrivedAt: number;
  stats: DecisionStats;
  marks: Headers;
}

/** Time left of the decision deadline (a margin kept for answering). */
function leftMs(cfg: Config, arrivedAt: number): number {
  return Math.max(1, cfg.server.decisionDeadlineMs - (performance.now() - arrivedAt) - 5);
}

/** Exact: at most the store's per-call timeout; semantic: what is left of the deadline. */
export function lookup(t: CacheTier): Promise<CacheHit | undefined> {
  const left = leftMs(t.cfg, t.arrivedAt);
  return t.cache
    .lookup(t.cfg.cache!, t.q, Math.min(left, t.cfg.store.timeoutMs), left)
    .catch(() => undefined);
}

/** One decision's cache tier: looked up at most once, before or after the store call. */
export class CacheStep {
  private hit?: CacheHit;
  private looked = false;

  constructor(private readonly t: CacheTier) {}

  /**
   * Before the store call: with `serve: always` a hit is the answer; when the call may queue, a hit
   * takes the queue out of the plan (the cache comes first; a candidate that fits still wins).
   */
  async before(): Promise<DenyDecision | undefined> {
    const { t } = this;
    const always = t.cfg.cache!.serve === 'always';
    if (!always && !t.built.plan.queue) return undefined;
    this.hit = await lookup(t);
    this.looked = true;
    const served = this.hit && always ? await serveHit(t, this.hit) : undefined;
    if (served) return served;
    if (this.hit) withoutQueue(t.built.plan);
    return undefined;
  }

  /** After it: no candidate fits → the hit, if there is one. */
  async after(result: CheckResult): Promise<DenyDecision | undefined> {
    if (!exhausted(result)) return undefined;
    if (!this.looked) this.hit = await lookup(this.t);
    return this.hit ? serveHit(this.t, this.hit, result) : undefined;
  }
}

/** A store result in which no candidate fits (the cache may answer instead). */
export function exhausted(r: CheckResult): boolean {
  return r.outcome === Outcome.Denied || r.outcome === Outcome.Never || r.outcome === Outcome.QueueFull;
}

/** The plan without its queue part (the queue's two keys are the last of `keys`). */
export function withoutQueue(plan: CheckPlan): void {
  if (!plan.queue) return;
  plan.queue = undefined;
  plan.keys.length -= 2;
}

/**
 * The hit as the Check's answer; `denied` (the store's result when no candidate fit) gives the
 * rate-limit headers. Undefined when `cache.charge: requests` and a request limit refuses it.
 */
export async function serveHit(
  t: CacheTier,
  hit: CacheHit,
  denied?: CheckResult,
): Promise<DenyDecision | undefined> {
  const res = hitResponse(t.q, hit);
  if (!res) return undefined;
  const h: Headers = { ...t.marks, ...res.headers };
  let rows: Row[] | undefined;
  let nowMs = denied?.nowMs ?? Date.now();
  if (t.cfg.cache!.charge === 'requests') {
    const charged = await chargeRequests(t);
    if (charged === 'refused') return undefined;
    if (charged) ({ rows, nowMs } = charged);
  } else if (denied) rows = t.built.meta[0].map((meta, i) => ({ meta, r: denied.candidates[0][i] }));
  if (rows) rateLimitHeaders(h, rows, nowMs);
  t.stats.chosenModel = t.stats.model;
  t.stats.reservedTokens = 0;
  t.stats.micros = 0;
  return deny('cache-hit', 200, h, res.body, t.stats);
}

/** One store call debiting only the requested model's request limits (atomically, like any check). */
async function chargeRequests(t: CacheTier): Promise<{ rows: Row[]; nowMs: number } | 'refused' | undefined> {
  const meta = t.built.meta[0];
  const idx = meta.map((m, i) => (m.limit.kind === 'requests' ? i : -1)).filter((i) => i >= 0);
  if (idx.length === 0) return undefined;
  const plan: CheckPlan = {
    keys: t.built.plan.keys,
    candidates: [idx.map((i) => t.built.plan.candidates[0][i])],
  };
  try {
    const r = await t.guard.check(plan, t.arrivedAt + t.cfg.server.overloadBudgetMs);
    if (r.outcome !== Outcome.Allowed) return 'refused';
    return { rows: idx.map((i, j) => ({ meta: meta[i], r: r.candidates[0][j] })), nowMs: r.nowMs };
  } catch {
    return 'refused';
  }
}
