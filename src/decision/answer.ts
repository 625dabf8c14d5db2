/**
 * The answer builder: a store result (or an early refusal) → an allow, deny or queued Decision, with
 * its rate-limit headers and an OpenAI-style error body.
 */
import type { BuiltPlan, CandidateCost } from '../policy/plan.js';
import { type CheckResult, EntryStatus, Outcome } from '../store/types.js';
import { type Row, rateLimitHeaders } from './headers.js';
import { queueFullText } from './queue-tier.js';
import { RESERVATION_HEADER } from './reservation.js';
import type { AllowDecision, Decision, DecisionStats, DenyDecision, Headers } from './types.js';

export const JSON_CT = 'application/json';

export function allow(
  reason: AllowDecision['reason'],
  upstreamHeaders: Headers,
  responseHeaders: Headers,
  clientSent: string[],
  stats: DecisionStats,
): AllowDecision {
  // Client-sent x-tollgate-* are removed unless we overwrite them ourselves.
  const removeHeaders = clientSent.filter((k) => !(k in upstreamHeaders));
  return { kind: 'allow', reason, upstreamHeaders, removeHeaders, responseHeaders, stats };
}

export function deny(
  reason: DenyDecision['reason'],
  httpStatus: number,
  headers: Headers,
  body: string,
  stats: DecisionStats,
): DenyDecision {
  if (!headers['content-type']) headers['content-type'] = JSON_CT;
  return { kind: 'deny', reason, httpStatus, headers, body, stats };
}

export function errorObj(message: string, type: string, code: string) {
  return { error: { message, type, code, param: null } };
}

export function errorBody(message: string, type: string, code: string): string {
  return JSON.stringify(errorObj(message, type, code));
}

export function badRequest(message: string): DenyDecision {
  return deny('bad-request', 400, {}, errorBody(message, 'invalid_request_error', 'invalid_request'), {});
}

/** What the pipeline knows when the store has answered. */
export interface Answering {
  built: BuiltPlan;
  costs: CandidateCost[];
  result: CheckResult;
  stats: DecisionStats;
  /** Headers every answer carries (x-tollgate-estimated). */
  marks: Headers;
  /** Client-sent x-tollgate-* headers. */
  removeHeaders: string[];
  /** x-tollgate-degraded, when the local fallback store answered. */
  degraded?: string;
}

/** The Decision for a store result. */
export function answer(a: Answering): Decision {
  const extra: Headers = { ...a.marks };
  if (a.degraded) extra['x-tollgate-degraded'] = a.degraded;
  if (a.result.outcome === Outcome.Allowed) return allowed(a, extra);
  if (a.result.outcome === Outcome.Queued) {
    const q = a.built.plan.queue!;
    a.stats.queue = q.name;
    a.stats.queueId = q.id;
    const h: Headers = { ...extra, 'content-type': JSON_CT, 'x-tollgate-queue-id': q.id };
    return deny('queued', 202, h, JSON.stringify({ status: 'queued', id: q.id, queue: q.name }), a.stats);
  }
  return denied(a, extra);
}

function rowsOf(a: Answering, ci: number): Row[] {
  return a.built.meta[ci].map((meta, i) => ({ meta, r: a.result.candidates[ci][i] }));
}

/** An entry that would refuse the call (exceeded or never fits), shadow or not. */
function refusing(status: EntryStatus): boolean {
  return status !== EntryStatus.Fits && status !== EntryStatus.BelowDowngrade;
}

function allowed(a: Answering, extra: Headers): AllowDecision {
  const { costs, stats, result } = a;
  const ci = result.chosen;
  const rows = rowsOf(a, ci);
  const up: Headers = { ...extra };
  const resp: Headers = { ...extra };
  rateLimitHeaders(resp, rows, result.nowMs);
  const chosen = costs[ci];
  stats.chosenModel = chosen.model;
  stats.promptTokens = chosen.promptTokens;
  stats.reservedTokens = chosen.outputTokens;
  stats.micros = chosen.micros;
  let reason: AllowDecision['reason'] = a.degraded ? 'degraded' : 'ok';
  if (ci > 0) {
    up['x-tollgate-model'] = resp['x-tollgate-model'] = chosen.model;
    up['x-tollgate-rerouted-from'] = resp['x-tollgate-rerouted-from'] = costs[0].model;
    reason = 'rerouted';
  }
  const shadowHit = rows.find((r) => r.meta.shadow && refusing(r.r.status));
  if (shadowHit) {
    up['x-tollgate-shadow'] = resp['x-tollgate-shadow'] = `deny;limit=${shadowHit.meta.limit.name}`;
    stats.limit = shadowHit.meta.limit.name;
    if (reason === 'ok') reason = 'shadow';
  }
  const rid = a.built.plan.reservation?.id;
  if (rid) up[RESERVATION_HEADER] = rid;
  const d = allow(reason, up, resp, a.removeHeaders, stats);
  if (rid) d.reservation = rid;
  return d;
}

/** Denied: the candidate that would fit soonest (or the requested one if none ever fits). */
function bestCandidate(a: Answering): number {
  let best = 0;
  let bestRetry = Number.POSITIVE_INFINITY;
  a.built.meta.forEach((_, ci) => {
    const rows = rowsOf(a, ci).filter((r) => !r.meta.shadow && refusing(r.r.status));
    if (rows.some((r) => r.r.status === EntryStatus.Never)) return;
    const retry = Math.max(0, ...rows.map((r) => r.r.retryMs));
    if (retry < bestRetry) {
      bestRetry = retry;
      best = ci;
    }
  });
  return best;
}

/** The blocking row that frees last (never-fits counts as forever). */
function bindingRow(rows: Row[]): Row {
  const blocking = rows.filter(
    (r) => !r.meta.shadow && (r.r.status === EntryStatus.Exceeded || r.r.status === EntryStatus.Never),
  );
  const wait = (r: Row) => (r.r.status === EntryStatus.Never ? 1e15 : r.r.retryMs);
  return blocking.reduce<Row | undefined>((b, r) => (!b || wait(r) > wait(b) ? r : b), undefined)!;
}

function denied(a: Answering, extra: Headers): DenyDecision {
  const { built, costs, result, stats } = a;
  const never = result.outcome === Outcome.Never;
  const rows = rowsOf(a, never ? 0 : bestCandidate(a));
  const binding = bindingRow(rows);
  const h: Headers = { ...extra, 'content-type': JSON_CT };
  rateLimitHeaders(h, rows, result.nowMs, binding);
  const l = binding.meta.limit;
  stats.limit = l.name;
  const candidates = built.meta.map((m, ci) => ({
    model: costs[ci].model,
    limits: m
      .filter((_, i) => !m[i].shadow && refusing(result.candidates[ci][i].status))
      .map((x) => x.limit.name),
  }));
  const listed = candidates.length > 1 ? { candidates } : {};
  const unit = l.kind === 'usd' ? 'micro-USD' : l.kind;
  if (never) {
    h['x-should-retry'] = 'false';
    const body = {
      ...errorObj(
        `This request needs ${binding.meta.cost} ${unit} but limit "${l.name}" (per ${binding.meta.scope}) allows at most ${l.amount}; it can never fit. Reduce the prompt or max_tokens.`,
        l.kind,
        'rate_limit_exceeded',
      ),
      retry_after_seconds: null,
      limit: l.name,
      ...listed,
    };
    return deny('never-fits', 429, h, JSON.stringify(body), stats);
  }
  const retryMs = Math.max(1, result.retryMs);
  const retryS = Math.max(1, Math.ceil(retryMs / 1000));
  h['retry-after'] = String(retryS);
  h['retry-after-ms'] = String(retryMs);
  const text =
    l.kind === 'concurrent'
      ? `Too many calls in flight on limit "${l.name}" (per ${binding.meta.scope}): at most ${l.amount} at once. Please try again in ${retryS}s.`
      : `Rate limit reached for ${l.kind} on limit "${l.name}" (per ${binding.meta.scope}): limit ${l.amount}, remaining ${Math.max(0, binding.r.remaining)}, this request needs ${binding.meta.cost} ${unit}. Please try again in ${retryS}s.`;
  const body = {
    ...errorObj(text, l.kind, 'rate_limit_exceeded'),
    retry_after_seconds: retryS,
    limit: l.name,
    ...listed,
  };
  if (result.outcome === Outcome.QueueFull) {
    const q = built.plan.queue!;
    stats.queue = q.name;
    (body as Record<string, unknown>).queue = q.name;
    body.error.message += queueFullText(q.name, result.queueFull);
    return deny('queue-full', 429, h, JSON.stringify(body), stats);
  }
  return deny('rate-limited', 429, h, JSON.stringify(body), stats);
}
