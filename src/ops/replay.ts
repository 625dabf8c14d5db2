/**
 * What-if replay (`tollgate replay`): recorded calls (replay-input.ts) decided one by one through a
 * config on a fresh in-memory store at SIMULATED time: the store's clock and the Decider's (calendar
 * windows) are each call's recorded time, so an hour of traffic replays in seconds and rolling buckets
 * refill as they would have. Per limit it reports the calls it denied, rerouted (to a fallback model)
 * and would have queued (the queue tier needs Valkey: such calls are counted, not queued), and the
 * first time the limit bound. Nothing is settled: a request is charged its reservation (prompt +
 * max_tokens), token counts exactly their tokens.
 */
import type { Config, LimitConfig } from '../config/types.js';
import { Decider } from '../decision/decide.js';
import type { Decision } from '../decision/types.js';
import { type Identity, resolveIdentity } from '../identity/identity.js';
import { fallbackChain } from '../policy/fallback.js';
import { modelResolver } from '../policy/models.js';
import { type BuiltPlan, buildPlan, type CandidateCost, modelConfig, priceMicros } from '../policy/plan.js';
import { keyNames } from '../store/keys.js';
import { MemoryStore } from '../store/memory.js';
import { type CheckPlan, type CheckResult, EntryStatus, Outcome, type Store } from '../store/types.js';
import { outcomeOf } from './metrics.js';
import type { CountsCall, ReplayCall } from './replay-input.js';

export { parseCalls, ReplayInputError } from './replay-input.js';
export { formatReplay } from './replay-report.js';

export interface LimitStats {
  limit: string;
  kind: LimitConfig['kind'];
  denied: number;
  rerouted: number;
  /** Denied calls a queue (queues:) would have taken on Valkey. */
  queued: number;
  /** Calls a shadow limit would have refused (let through). */
  shadow: number;
  /** ISO time of the first call this limit denied, rerouted or queued; null: it never bound. */
  first_bound: string | null;
}

export interface ReplayReport {
  calls: number;
  allowed: number;
  rerouted: number;
  denied: number;
  queued: number;
  /** Bad requests, non-LLM paths and other answers that are none of the above. */
  other: number;
  from: string | null;
  to: string | null;
  limits: LimitStats[];
}

type Kind = 'allow' | 'reroute' | 'deny' | 'queue' | 'other';

/** One decided call: what happened, and the plan and store result behind it (none: no limit applied). */
interface Decided {
  kind: Kind;
  /** The binding limit of a deny. */
  limit?: string;
  built?: BuiltPlan;
  result?: CheckResult;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** Replay `calls` (in time order) through `cfg`. */
export async function replay(cfg: Config, calls: ReplayCall[]): Promise<ReplayReport> {
  let now = calls[0]?.at ?? 0;
  const clock = () => now;
  const memory = new MemoryStore(clock, 1, Number.MAX_SAFE_INTEGER);
  let last: { plan: CheckPlan; result: CheckResult } | undefined;
  const recorder: Store = {
    kind: 'memory',
    ping: () => memory.ping(),
    close: () => memory.close(),
    reservation: (k) => memory.reservation(k),
    settle: (r) => memory.settle(r),
    check: async (plan) => {
      const result = await memory.check(plan);
      last = { plan, result };
      return result;
    },
  };
  // one decision at a time, however slow the machine: no deadline may turn an answer into "degraded"
  const relaxed: Config = {
    ...cfg,
    server: { ...cfg.server, decisionDeadlineMs: 60_000, overloadBudgetMs: 120_000 },
    store: { ...cfg.store, timeoutMs: 60_000 },
  };
  const decider = new Decider(relaxed, { store: recorder, clock });
  const report = emptyReport(cfg, calls);
  const byName = new Map(report.limits.map((l) => [l.limit, l]));
  try {
    for (const call of calls) {
      now = call.at;
      last = undefined;
      const d =
        call.kind === 'request'
          ? fromDecision(cfg, await decider.decide(requestInput(call)), () => last, now)
          : await decideCounts(cfg, memory, call, now);
      tally(report, byName, d, now);
    }
  } finally {
    await decider.close();
    await memory.close();
  }
  return report;
}

function emptyReport(cfg: Config, calls: ReplayCall[]): ReplayReport {
  return {
    calls: calls.length,
    allowed: 0,
    rerouted: 0,
    denied: 0,
    queued: 0,
    other: 0,
    from: calls.length ? iso(calls[0].at) : null,
    to: calls.length ? iso(calls[calls.length - 1].at) : null,
    limits: cfg.limits.map((l) => ({
      limit: l.name,
      kind: l.kind,
      denied: 0,
      rerouted: 0,
      queued: 0,
      shadow: 0,
      first_bound: null,
    })),
  };
}

function requestInput(call: Extract<ReplayCall, { kind: 'request' }>) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...call.headers };
  headers['content-length'] ??= String(Buffer.byteLength(call.body));
  return { method: 'POST', path: call.path, headers, body: Buffer.from(call.body) };
}

/** A configured model's costs along its fallback chain, for `prompt` and `output` tokens. */
function chainCosts(cfg: Config, model: string, prompt: number, output: number, n?: number) {
  const chain = fallbackChain(cfg.models, model);
  const names = (Array.isArray(chain) ? chain : [model]).slice(0, n);
  return names.map((name): CandidateCost => {
    const mc = modelConfig(cfg, name);
    return {
      model: name,
      config: mc,
      promptTokens: prompt,
      outputTokens: output,
      micros: priceMicros(mc, prompt, output),
    };
  });
}

/** A Decider's decision, with the plan's limits rebuilt for its identity and candidates. */
function fromDecision(
  cfg: Config,
  d: Decision,
  lastCheck: () => { plan: CheckPlan; result: CheckResult } | undefined,
  now: number,
): Decided {
  const o = outcomeOf(d);
  const check = lastCheck();
  const kind: Kind = o === 'allow' || o === 'reroute' || o === 'deny' ? o : 'other';
  if (!check || !d.stats.model || !d.stats.identity) return { kind, limit: d.stats.limit };
  const costs = chainCosts(cfg, d.stats.model, 0, 0, check.result.candidates.length);
  const built = buildPlan(cfg, d.stats.identity, costs, keyNames, now);
  const queued = kind === 'deny' && wouldQueue(cfg, built, costs, check.plan, check.result);
  return { kind: queued ? 'queue' : kind, limit: d.stats.limit, built, result: check.result };
}

/** Token counts: the plan built by policy for the identity and the model's chain, checked directly. */
async function decideCounts(cfg: Config, store: Store, call: CountsCall, now: number): Promise<Decided> {
  const identity: Identity =
    call.identity ?? resolveIdentity(cfg, { path: '/v1/chat/completions', headers: call.headers ?? {} });
  const model = modelResolver(cfg).resolve(call.model) ?? call.model;
  const costs = chainCosts(cfg, model, call.prompt, call.output);
  const built = buildPlan(cfg, identity, costs, keyNames, now);
  if (built.meta.every((m) => m.length === 0)) return { kind: 'allow' };
  const result = await store.check(built.plan);
  if (result.outcome === Outcome.Allowed)
    return { kind: result.chosen > 0 ? 'reroute' : 'allow', built, result };
  const limit = bindingLimit(built, result);
  const queued = wouldQueue(cfg, built, costs, built.plan, result);
  return { kind: queued ? 'queue' : 'deny', limit, built, result };
}

/**
 * Whether Valkey would have queued this denied call: a queue applies (as decision/costs.ts planCall
 * picks it) and every enforced limit blocking the first candidate is queueable and could ever fit
 * (as lua/check-limits.lua decides).
 */
function wouldQueue(
  cfg: Config,
  built: BuiltPlan,
  costs: CandidateCost[],
  plan: CheckPlan,
  result: CheckResult,
): boolean {
  if (result.outcome !== Outcome.Denied) return false;
  const queue =
    costs[0].config.queue ??
    cfg.limits.find((l) => l.queue && built.meta[0].some((m) => m.limit === l))?.queue;
  if (queue === undefined) return false;
  return plan.candidates[0].every((e, i) => {
    const s = result.candidates[0][i].status;
    return e.shadow || !refusing(s) || (e.queueable && s !== EntryStatus.Never);
  });
}

const refusing = (s: EntryStatus) => s === EntryStatus.Exceeded || s === EntryStatus.Never;

/** As the deny answer picks it (decision/answer.ts): the candidate that frees soonest, its last-freeing limit. */
function bindingLimit(built: BuiltPlan, result: CheckResult): string | undefined {
  const wait = (ci: number, i: number) => {
    const r = result.candidates[ci][i];
    return r.status === EntryStatus.Never ? Number.POSITIVE_INFINITY : r.retryMs;
  };
  const blocking = (ci: number) =>
    built.meta[ci].flatMap((m, i) => (!m.shadow && refusing(result.candidates[ci][i].status) ? [i] : []));
  let best = 0;
  let bestWait = Number.POSITIVE_INFINITY;
  if (result.outcome !== Outcome.Never)
    built.meta.forEach((_, ci) => {
      const w = Math.max(0, ...blocking(ci).map((i) => wait(ci, i)));
      if (w < bestWait) [best, bestWait] = [ci, w];
    });
  const rows = blocking(best);
  if (!rows.length) return undefined;
  const i = rows.reduce((b, r) => (wait(best, r) > wait(best, b) ? r : b));
  return built.meta[best][i].limit.name;
}

function tally(report: ReplayReport, byName: Map<string, LimitStats>, d: Decided, now: number) {
  const bound = (name: string | undefined, field: 'denied' | 'rerouted' | 'queued') => {
    const s = name === undefined ? undefined : byName.get(name);
    if (!s) return;
    s[field]++;
    s.first_bound ??= iso(now);
  };
  if (d.kind === 'allow') report.allowed++;
  else if (d.kind === 'reroute') report.rerouted++;
  else if (d.kind === 'deny') report.denied++;
  else if (d.kind === 'queue') report.queued++;
  else report.other++;
  if (d.kind === 'deny') bound(d.limit, 'denied');
  if (d.kind === 'queue') bound(d.limit, 'queued');
  const { built, result } = d;
  if (!built || !result) return;
  if (d.kind === 'reroute')
    built.meta[0].forEach((m, i) => {
      const s = result.candidates[0][i].status;
      if (!m.shadow && s !== EntryStatus.Fits) bound(m.limit.name, 'rerouted');
    });
  const ci = result.chosen;
  if (ci >= 0)
    built.meta[ci].forEach((m, i) => {
      if (m.shadow && refusing(result.candidates[ci][i].status)) byName.get(m.limit.name)!.shadow++;
    });
}
