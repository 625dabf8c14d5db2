/**
 * The operator's questions, answered from the store (Valkey or memory), protocol-free: the admin
 * listener (http.ts) and the CLI (`tollgate usage | credit | reset`) both call these.
 *
 *   usageOf      every limit that applies to an identity (and model): capacity, used, remaining, reset.
 *                Read by a DRY RUN of the check script with every cost 0, so nothing is debited and
 *                `remaining` is exactly what is left now (what the next check's headers start from).
 *   adjustLimit  a one-off credit (add units to the current window / bucket) or reset (refill) of one
 *                limit for one scope: lua/adjust-limit.lua, atomically (memory: memory-adjust.ts).
 */
import type { Config, LimitConfig } from '../config/types.js';
import type { Identity } from '../identity/identity.js';
import { modelResolver } from '../policy/models.js';
import { buildPlan, type CandidateCost, modelConfig, type PlanMeta } from '../policy/plan.js';
import { keyNames } from '../store/keys.js';
import type { EntryResult, PlanEntry, Store } from '../store/types.js';

/** Dimension → value, as tollgate keys it (API keys as their `key_…` id). */
export type Scope = Record<string, string>;

/** A refusal with its HTTP status and a machine-readable code (the CLI prints the message). */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface UsageRow {
  limit: string;
  kind: LimitConfig['kind'];
  /** Units of capacity / used / remaining: requests, tokens, micro_usd or calls (in flight). */
  unit: string;
  window: Record<string, string | number>;
  /** The scope this limit is kept per (its `per` dimensions and their values); {} = global. */
  scope: Scope;
  /** The limit's `models` filter, when it has one. */
  models?: string[];
  shadow: boolean;
  capacity: number;
  used: number;
  remaining: number;
  /** Epoch seconds: when the window ends / the bucket is full again (X-RateLimit-Reset's rule). */
  reset: number;
}

export interface UsageReport {
  scope: Scope;
  /** The model asked about (resolved to its configured name), or null: every configured model. */
  model: string | null;
  store: Store['kind'];
  limits: UsageRow[];
}

const UNIT = { requests: 'requests', tokens: 'tokens', usd: 'micro_usd', concurrent: 'calls' } as const;

function windowOf(l: LimitConfig): Record<string, string | number> {
  const w = l.window;
  if (w.type === 'rolling') return { type: 'rolling', every_ms: w.ms };
  if (w.type === 'concurrent') return { type: 'concurrent', lease_ms: w.leaseMs };
  return { type: 'calendar', reset: w.unit, timezone: w.timezone ?? 'UTC' };
}

/** A configured model name for `raw` (aliases, snapshots), or `raw` itself: charged as "*". */
function resolveModel(cfg: Config, raw: string): string {
  return modelResolver(cfg).resolve(raw) ?? raw;
}

const free = (cfg: Config, model: string): CandidateCost => ({
  model,
  config: modelConfig(cfg, model),
  promptTokens: 0,
  outputTokens: 0,
  micros: 0,
});

/** Every limit that applies to `scope` (and `model`; none: each configured model), read by a dry run. */
export async function usageOf(cfg: Config, store: Store, scope: Scope, model?: string): Promise<UsageReport> {
  const { model: _m, ...dims } = scope;
  const asked = model ?? scope.model;
  const models =
    asked !== undefined ? [resolveModel(cfg, asked)] : cfg.models.size ? [...cfg.models.keys()] : ['*'];
  const id: Identity = { ...dims };
  const built = buildPlan(
    cfg,
    id,
    models.map((m) => free(cfg, m)),
    keyNames,
    Date.now(),
  );
  const { plan, meta } = built;
  for (const cand of plan.candidates)
    for (const e of cand) {
      e.cost = 0; // nothing is taken: `remaining` is what is left now
      e.downgradeAt = 0;
      e.queueable = false;
    }
  const result = await store.check({ ...plan, dryRun: true });
  const rows: UsageRow[] = [];
  const seen = new Set<number>();
  for (let ci = 0; ci < plan.candidates.length; ci++)
    for (let i = 0; i < plan.candidates[ci].length; i++) {
      const key = plan.candidates[ci][i].key;
      if (seen.has(key)) continue; // one row per state key (a limit shared by every model)
      seen.add(key);
      const keyedModel = cfg.models.has(models[ci]) ? models[ci] : '*';
      rows.push(usageRow(meta[ci][i], result.candidates[ci][i], result.nowMs, id, keyedModel));
    }
  return { scope, model: asked !== undefined ? models[0] : null, store: store.kind, limits: rows };
}

/** What one limit's dry-run entry says, as the headers would (remaining never below 0 there). */
function usageRow(m: PlanMeta, r: EntryResult, nowMs: number, id: Identity, model: string): UsageRow {
  const l = m.limit;
  const row: UsageRow = {
    limit: l.name,
    kind: l.kind,
    unit: UNIT[l.kind],
    window: windowOf(l),
    scope: Object.fromEntries(l.per.map((d) => [d, d === 'model' ? model : (id[d] as string)])),
    shadow: m.shadow,
    capacity: l.amount,
    used: l.amount - r.remaining,
    remaining: Math.max(0, r.remaining),
    reset: Math.ceil((nowMs + Math.max(0, r.retryMs > 0 ? r.retryMs : r.resetMs)) / 1000),
  };
  if (l.models) row.models = l.models;
  return row;
}

/** One limit for one scope: its state key and its plan entry (404 / 400 when it cannot be named). */
export function limitEntry(
  cfg: Config,
  name: unknown,
  scope: Scope,
): { limit: LimitConfig; key: string; entry: PlanEntry; scope: Scope } {
  if (typeof name !== 'string' || !name)
    throw new AdminError(400, 'invalid_request', '"limit" (a name) is required');
  const l = cfg.limits.find((x) => x.name === name);
  if (!l) throw new AdminError(404, 'limit_not_found', `No limit named "${name}" in the configuration.`);
  for (const d of l.per)
    if (scope[d] === undefined || scope[d] === '')
      throw new AdminError(
        400,
        'scope_incomplete',
        `scope is missing "${d}": limit "${l.name}" is kept per ${l.per.join(',')}`,
      );
  for (const [d, v] of Object.entries(l.when ?? {}))
    if (scope[d] !== undefined && scope[d] !== v)
      throw new AdminError(400, 'scope_mismatch', `limit "${l.name}" applies only when ${d}=${v}`);
  const model = l.per.includes('model') ? resolveModel(cfg, scope.model) : (l.models?.[0] ?? '*');
  const id: Identity = { ...l.when, ...scope };
  const built = buildPlan({ ...cfg, limits: [l] }, id, [free(cfg, model)], keyNames, Date.now());
  const entry = built.plan.candidates[0][0];
  if (!entry)
    throw new AdminError(400, 'scope_mismatch', `limit "${l.name}" does not cover model "${model}"`);
  const kept = Object.fromEntries(l.per.map((d) => [d, d === 'model' ? model : scope[d]]));
  return { limit: l, key: built.plan.keys[entry.key], entry, scope: kept };
}

/** A credit's amount in the limit's integer units (usd: dollars → micro-dollars). */
export function creditUnits(l: LimitConfig, amount: unknown): number {
  const n = typeof amount === 'string' && amount.trim() !== '' ? Number(amount) : amount;
  if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0 || n > 1e12)
    throw new AdminError(
      400,
      'invalid_amount',
      `"amount" must be a positive number, got ${JSON.stringify(amount)}`,
    );
  if (l.kind === 'concurrent')
    throw new AdminError(
      400,
      'invalid_request',
      `limit "${l.name}" is a concurrency limit: it takes no credits (POST /v1/reset releases its slots)`,
    );
  if (l.kind === 'usd') {
    const micros = Math.round(n * 1e6);
    if (micros < 1) throw new AdminError(400, 'invalid_amount', '"amount" is below one micro-dollar');
    return micros;
  }
  if (!Number.isInteger(n))
    throw new AdminError(400, 'invalid_amount', `"amount" must be a whole number of ${l.kind}, got ${n}`);
  return n;
}

export interface AdjustReport {
  op: 'credit' | 'reset';
  limit: string;
  scope: Scope;
  /** Units added (credit): in the limit's unit (usd: micro-dollars). */
  units?: number;
  unit: string;
  capacity: number;
  remaining: number;
  /** Epoch seconds: the window's end (calendar) or when the bucket is full (rolling). */
  reset: number;
}

/** A credit or a reset of `req.limit` for `req.scope`, atomically in the store. */
export async function adjustLimit(
  cfg: Config,
  store: Store,
  op: 'credit' | 'reset',
  req: { limit?: unknown; scope?: unknown; amount?: unknown },
): Promise<AdjustReport> {
  const scope = scopeOf(req.scope);
  const { limit, key, entry, scope: kept } = limitEntry(cfg, req.limit, scope);
  const units = op === 'credit' ? creditUnits(limit, req.amount) : 0;
  if (!store.adjust)
    throw new AdminError(501, 'not_supported', `the ${store.kind} store cannot adjust limits`);
  const r = await store.adjust({ op, key, entry, amount: units });
  const report: AdjustReport = {
    op,
    limit: limit.name,
    scope: kept,
    unit: UNIT[limit.kind],
    capacity: limit.amount,
    remaining: r.remaining,
    reset: Math.ceil((r.nowMs + r.resetMs) / 1000),
  };
  if (op === 'credit') report.units = units;
  return report;
}

/** A scope given as a JSON object of dimension → string (numbers accepted). */
export function scopeOf(v: unknown): Scope {
  if (v === undefined) return {};
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new AdminError(400, 'invalid_request', '"scope" must be an object of dimension: value');
  const out: Scope = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string' && typeof x !== 'number')
      throw new AdminError(400, 'invalid_request', `scope.${k} must be a string`);
    out[k] = String(x);
  }
  return out;
}
