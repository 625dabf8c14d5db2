/**
 * Validation: each section of the file is parsed by its schema, then the checks across sections run
 * (dimension names in limits, queue and model references, prices under usd limits, store.timeout
 * below the deadline) on every section that parsed, so one run lists every problem it can find.
 */
import { ConfigError } from '../../errors.js';
import { envValue, settings } from '../../settings.js';
import type { Config } from '../types.js';
import { type Sections, sections } from './config.js';
import { describe, formatIssues, formatPath } from './format.js';
import type { LimitConfig } from './limits.js';
import { BUILTIN_MODEL, type ModelConfig, type ModelFields } from './models.js';
import { resolveQueue } from './queues.js';

type Key = keyof Sections;

/** Validate and normalize a parsed YAML document. Throws ConfigError listing every problem. */
export function validateConfig(raw: unknown, file?: string): Config {
  const problems: string[] = [];
  const root = raw ?? {};
  const parsed = parseSections(root, problems);
  checkDimensions(parsed, (root as { limits?: unknown }).limits, problems);
  const config = resolve(parsed, problems);
  if (problems.length > 0 || !config) throw new ConfigError(problems, file);
  return config;
}

function parseSections(raw: unknown, problems: string[]): Partial<Sections> {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    problems.push(`(root): expected a mapping, got ${describe(raw)}`);
    return {};
  }
  const root = raw as Record<string, unknown>;
  const keys = Object.keys(sections);
  for (const k of Object.keys(root))
    if (!keys.includes(k)) problems.push(`${k}: unknown field (allowed: ${keys.join(', ')})`);
  const out: Partial<Record<Key, unknown>> = {};
  for (const key of keys as Key[]) {
    const r = sections[key].safeParse(root[key], { reportInput: true });
    if (r.success) out[key] = r.data;
    else problems.push(...formatIssues(r.error.issues, [key]));
  }
  return out as Partial<Sections>;
}

/** The checks across sections, and the Config when every section parsed. */
function resolve(s: Partial<Sections>, problems: string[]): Config | undefined {
  const models = s.models && s.queues ? resolveModels(s.models, s.queues, problems) : undefined;
  const limits = s.limits && resolveLimits(s, problems);
  if (models && limits) checkPrices(models.models, models.defaultModel, limits, problems);
  if (s.server && s.store && s.store.timeoutMs >= s.server.decisionDeadlineMs)
    problems.push(
      `store.timeout: expected less than server.decision_deadline (${s.server.decisionDeadlineMs} ms), got ${s.store.timeoutMs} ms`,
    );
  if (s.identity && s.settle?.usageStream?.dimensions)
    for (const [i, d] of s.settle.usageStream.dimensions.entries())
      if (!(d in s.identity.identity))
        problems.push(
          `${formatPath(['settle', 'usage_stream', 'dimensions', i])}: expected an identity dimension (${Object.keys(s.identity.identity).join(', ')}), got "${d}"`,
        );
  if (s.identity && s.store?.shardBy && !(s.store.shardBy in s.identity.identity))
    problems.push(
      `store.shard_by: expected an identity dimension (${Object.keys(s.identity.identity).join(', ')}), got "${s.store.shardBy}"`,
    );
  if (s.settle && !s.settle.enabled && limits)
    limits.forEach((l, i) => {
      if (l.kind === 'concurrent')
        problems.push(
          `${formatPath(['limits', i, 'concurrent'])}: needs settle.enabled (a slot is released when its call is settled)`,
        );
    });
  checkCache(s, problems);
  const { identity, tool_weights, queues, mode, server, store, settle, cache } = s;
  if (!identity || !models || !limits || !tool_weights || !queues || !mode || !server || !store || !settle)
    return;
  return {
    identity: identity.identity,
    keyMap: identity.keyMapFile
      ? { file: identity.keyMapFile, entries: new Map(), unknownKeys: identity.unknownKeys ?? 'own' }
      : undefined,
    toolWeights: tool_weights,
    apiKeySecret: identity.secretEnv ? envValue(identity.secretEnv) : settings().apiKeySecret,
    models: models.models,
    defaultModel: models.defaultModel,
    limits,
    queues,
    mode,
    server,
    store,
    settle,
    cache,
  };
}

/** cache.scope names identity dimensions; the cache is filled by the response phase (settle). */
function checkCache(s: Partial<Sections>, problems: string[]): void {
  const c = s.cache;
  if (!c) return;
  if (s.identity)
    for (const [i, d] of c.scope.entries())
      if (!(d in s.identity.identity))
        problems.push(
          `${formatPath(['cache', 'scope', i])}: expected an identity dimension (${Object.keys(s.identity.identity).join(', ')}), got "${d}"`,
        );
  if (s.settle && !s.settle.enabled)
    problems.push('cache: needs settle.enabled (answers are captured by the response phase)');
}

/** Named models inherit "*"'s fields, "*" the built-in defaults; `when_exhausted: queue` finds its queue. */
function resolveModels(raw: Record<string, ModelFields>, queues: Sections['queues'], problems: string[]) {
  const build = (name: string, m: ModelFields, base: ModelConfig): ModelConfig => {
    const { fallback, whenExhausted, queue: _named, aliases = [], ...own } = m;
    const q = resolveQueue(m, queues);
    if (q.problem) problems.push(`${formatPath(['models', name, 'queue'])}: ${q.problem}`);
    // a model that says nothing about exhaustion inherits "*"'s queue
    const queue = q.queue ?? (whenExhausted === undefined ? base.queue : undefined);
    return { ...base, ...own, name, fallback, queue, aliases };
  };
  const builtin: ModelConfig = { ...BUILTIN_MODEL, name: '*', fallback: [], aliases: [] };
  const defaultModel = raw['*'] ? build('*', raw['*'], builtin) : builtin;
  const models = new Map<string, ModelConfig>();
  for (const [name, m] of Object.entries(raw))
    if (name !== '*') models.set(name, build(name, m, { ...defaultModel, fallback: [] }));
  return { models, defaultModel };
}

/**
 * The dimensions each limit names in `per` and `when` exist under `identity`. Reads the parsed limits,
 * or the raw ones when the limits section has other problems (so those are listed together).
 */
function checkDimensions(s: Partial<Sections>, rawLimits: unknown, problems: string[]): void {
  if (!s.identity) return;
  const dims = new Set(Object.keys(s.identity.identity));
  const limits: unknown[] = s.limits ?? (Array.isArray(rawLimits) ? rawLimits : []);
  limits.forEach((l, i) => {
    const { per, when } = (l ?? {}) as { per?: unknown; when?: unknown };
    const names = typeof per === 'string' ? [per] : Array.isArray(per) ? per : [];
    names.forEach((d, j) => {
      if (typeof d === 'string' && d !== 'model' && !dims.has(d))
        problems.push(
          `${formatPath(['limits', i, 'per', j])}: expected an identity dimension (${[...dims, 'model'].join(', ')}), got "${d}"`,
        );
    });
    for (const k of when && typeof when === 'object' && !Array.isArray(when) ? Object.keys(when) : [])
      if (!dims.has(k))
        problems.push(
          `${formatPath(['limits', i, 'when', k])}: expected an identity dimension (${[...dims].join(', ')}), got "${k}"`,
        );
  });
}

/** Queue and model references. */
function resolveLimits(s: Partial<Sections>, problems: string[]): LimitConfig[] {
  return (s.limits ?? []).map((l, i) => {
    (l.models ?? []).forEach((name, j) => {
      if (s.models && !(name in s.models && name !== '*'))
        problems.push(
          `${formatPath(['limits', i, 'models', j])}: expected a model configured under "models" (add \`${name}: {}\` there to price it like "*"), got "${name}"`,
        );
    });
    const { whenExhausted: _w, queue: _q, ...limit } = l;
    const q = s.queues ? resolveQueue(l, s.queues) : {};
    if (q.problem) problems.push(`${formatPath(['limits', i, 'queue'])}: ${q.problem}`);
    return { ...limit, queue: q.queue };
  });
}

/**
 * No `usd` limit can meet a model without a price (it would charge such calls 0): every model it
 * names, or, without `models`, every configured model and "*" (docs/models-and-pricing.md).
 */
function checkPrices(
  models: Map<string, ModelConfig>,
  defaultModel: ModelConfig,
  limits: LimitConfig[],
  problems: string[],
): void {
  const unpriced = (m: ModelConfig) => m.priceInPer1M === 0 && m.priceOutPer1M === 0;
  limits.forEach((l, i) => {
    if (l.kind !== 'usd') return;
    const met = l.models
      ? l.models.map((n) => models.get(n)).filter((m) => m !== undefined)
      : [...models.values(), defaultModel];
    for (const m of met)
      if (unpriced(m))
        problems.push(
          `limits[${i}].usd: every model it applies to needs price_usd_per_1m, but models["${m.name}"] has none${m.name === '*' ? ' (any model not listed would be charged 0)' : ''}`,
        );
  });
}
