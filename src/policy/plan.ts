/**
 * Policy: which limits apply to a call, what it costs on each, and the store plan that checks them all.
 */
import type { Config, LimitConfig, ModelConfig } from '../config/types.js';
import { type Identity, safeId } from '../identity/identity.js';
import { zonedWindow } from './calendar.js';
import { CALENDAR_CODE, type CheckPlan, EntryKind, type KeyNames, type PlanEntry } from './plan-types.js';

/** What one candidate model would cost. */
export interface CandidateCost {
  model: string;
  config: ModelConfig;
  promptTokens: number;
  outputTokens: number;
  /** Integer micro-dollars, rounded up. */
  micros: number;
}

/** Integer micro-dollars for tokens at per-1M prices (micro-dollars per 1M tokens), rounded up, exact. */
export function priceMicros(m: ModelConfig, promptTokens: number, outputTokens: number): number {
  const num = BigInt(promptTokens) * BigInt(m.priceInPer1M) + BigInt(outputTokens) * BigInt(m.priceOutPer1M);
  const q = num / 1_000_000n;
  return Number(num % 1_000_000n === 0n ? q : q + 1n);
}

export function modelConfig(cfg: Config, name: string): ModelConfig {
  return cfg.models.get(name) ?? cfg.defaultModel;
}

/** Output tokens to reserve: the request's own cap, else the model's default, else the server default. */
export function reservedOutput(
  cfg: Config,
  m: ModelConfig,
  requested: number | undefined,
  n: number,
): number {
  if (requested !== undefined) return requested;
  return (m.defaultMaxOutputTokens || cfg.server.defaultMaxOutputTokens) * n;
}

export interface PlanMeta {
  limit: LimitConfig;
  cost: number;
  /** Which scope the limit was keyed by, e.g. "tenant" or "org,model" (never the raw id). */
  scope: string;
  /** Counted and reported, never blocks (limit mode or global mode shadow). */
  shadow: boolean;
}

export interface BuiltPlan {
  plan: CheckPlan;
  /** Parallel to plan.candidates: which limit each entry is. */
  meta: PlanMeta[][];
}

function applies(l: LimitConfig, model: string, id: Identity): boolean {
  if (l.models && !l.models.includes(model)) return false;
  if (l.when) for (const [dim, v] of Object.entries(l.when)) if (id[dim] !== v) return false;
  for (const d of l.per) if (d !== 'model' && id[d] === undefined) return false;
  return true;
}

function costOf(l: LimitConfig, c: CandidateCost, requestWeight: number): number {
  if (l.kind === 'requests') return l.weighted ? requestWeight : 1;
  if (l.kind === 'concurrent') return 1;
  if (l.kind === 'tokens') return Math.ceil((c.promptTokens + c.outputTokens) * c.config.tokenWeight);
  return c.micros;
}

/**
 * A call's request weight from the tools it declares or invokes: the sum of each distinct tool's
 * weight (tool_weights; "*" for tools not listed, default 1), at least 1. A call without tools weighs 1.
 */
export function requestWeight(cfg: Config, tools: readonly string[] | undefined): number {
  if (!tools || tools.length === 0) return 1;
  const other = cfg.toolWeights.get('*') ?? 1;
  let w = 0;
  for (const t of new Set(tools)) w += cfg.toolWeights.get(t) ?? other;
  return Math.max(1, w);
}

const ENTRY_KIND = {
  rolling: EntryKind.Rolling,
  calendar: EntryKind.Calendar,
  concurrent: EntryKind.Concurrent,
} as const;

/** What a limit contributes to every plan, computed once per limit (limits are per config). */
const statics = new WeakMap<LimitConfig, { storePrefix: string; prefix: string; scope: string }>();
function limitStatics(cfg: Config, l: LimitConfig, names: KeyNames): { prefix: string; scope: string } {
  let st = statics.get(l);
  if (!st || st.storePrefix !== cfg.store.prefix) {
    st = {
      storePrefix: cfg.store.prefix,
      prefix: names.limitPrefix(cfg.store.prefix, l),
      scope: l.per.join(',') || 'global',
    };
    statics.set(l, st);
  }
  return st;
}

export function buildPlan(
  cfg: Config,
  id: Identity,
  candidates: CandidateCost[],
  names: KeyNames,
  nowMs = Date.now(),
  weight = 1,
): BuiltPlan {
  const keys: string[] = [];
  const keyIndex = new Map<string, number>();
  const plan: CheckPlan = { keys, candidates: [] };
  const meta: PlanMeta[][] = [];
  const last = candidates.length - 1;
  candidates.forEach((c, ci) => {
    const entries: PlanEntry[] = [];
    const metas: PlanMeta[] = [];
    for (const l of cfg.limits) {
      if (!applies(l, c.model, id)) continue;
      const st = limitStatics(cfg, l, names);
      let key = st.prefix;
      // per model: a name that matched no configured model is keyed as "*" (one bucket for all of
      // them), so rotating made-up model names never opens a fresh budget
      for (const d of l.per) {
        const part = safeId(d === 'model' ? (cfg.models.has(c.model) ? c.model : '*') : (id[d] as string));
        key += `:${d === cfg.store.shardBy ? names.shardPart(part) : part}`;
      }
      const w = l.window;
      let ki = keyIndex.get(key);
      if (ki === undefined) {
        ki = keys.push(key) - 1;
        keyIndex.set(key, ki);
      }
      const cost = costOf(l, c, weight);
      const shadow = l.shadow || cfg.mode === 'shadow';
      const period =
        w.type === 'rolling' ? w.ms : w.type === 'concurrent' ? w.leaseMs : CALENDAR_CODE[w.unit];
      // a zone's window ends where its wall clock reaches the boundary (DST moves it): precomputed
      const zone = w.type === 'calendar' && w.timezone ? zonedWindow(nowMs, period, w.timezone) : undefined;
      entries.push({
        key: ki,
        kind: ENTRY_KIND[w.type],
        capacity: l.amount,
        period,
        tzOffsetMin: zone ? zone.offMin : 0,
        zoneEnd: zone ? zone.end : 0,
        zoneNext: zone ? zone.next : 0,
        cost,
        shadow,
        queueable: Boolean(l.queue || c.config.queue),
        downgradeAt: l.downgradeBelow && ci < last ? Math.ceil(l.amount * l.downgradeBelow) : 0,
      });
      metas.push({ limit: l, cost, scope: st.scope, shadow });
    }
    plan.candidates.push(entries);
    meta.push(metas);
  });
  return { plan, meta };
}
