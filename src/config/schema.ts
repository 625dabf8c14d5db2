/**
 * Config schema: validates the raw YAML object key by key and normalizes it into `Config`.
 * Every problem is reported with its field path and what was expected; unknown keys are errors
 * (a typo must never silently disable a limit).
 */
import { ConfigError } from '../errors.js';
import { envValue, settings } from '../settings.js';
import { parseSourceIp, parseUnknownKeys } from './identity-options.js';
import { checkPortClash, parseListeners } from './listeners.js';
import { checkModels } from './models-check.js';
import { DEFAULT_MAX_INFLIGHT, overloadServer } from './overload.js';
import { parseQueues } from './queues.js';
import type {
  CalendarUnit,
  Config,
  FailurePolicy,
  IdentityDim,
  IdentitySource,
  LimitConfig,
  LimitKind,
  LimitWindow,
  ModelConfig,
  StoreClient,
  UnknownKeys,
} from './types.js';
import { parseDuration, parseShare, usdToMicros } from './units.js';

/** HTTP/2's initial flow-control window (RFC 9113; Node's default) and its maximum. */
export const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/**
 * Decisions started per event-loop turn (server.checks_per_turn). Bench, small chat closed loop, 64
 * in flight: 2 to 6 all ran 20-25% more checks/s than no pacing (README, Performance).
 */
export const DEFAULT_CHECKS_PER_TURN = 4;
/**
 * Limit keys the in-memory store holds at once (store.memory_max_keys): ~200 bytes each, so ~20 MB.
 * At the bound, keys whose state equals no state (bucket full again, window over) are evicted; if
 * none is, a call that needs a new key is answered per on_store_failure (src/store/memory.ts).
 */
export const DEFAULT_MEMORY_MAX_KEYS = 100_000;

export const ENCODINGS = ['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as const;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const DIM = /^[a-z][a-z0-9_]{0,31}$/;
const CALENDAR: CalendarUnit[] = ['hourly', 'daily', 'weekly', 'monthly'];

type Obj = Record<string, unknown>;

export class Checker {
  problems: string[] = [];
  fail(path: string, expected: string, got?: unknown): void {
    const shown = got === undefined ? '' : `, got ${describe(got)}`;
    this.problems.push(`${path || '(root)'}: expected ${expected}${shown}`);
  }
  obj(path: string, v: unknown): Obj | undefined {
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Obj;
    this.fail(path, 'a mapping', v);
    return undefined;
  }
  keys(path: string, o: Obj, allowed: readonly string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k))
        this.problems.push(`${join(path, k)}: unknown field (allowed: ${allowed.join(', ')})`);
    }
  }
  int(path: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    this.fail(path, `an integer from ${min} to ${max}`, v);
    return undefined;
  }
  num(path: string, v: unknown, min: number): number | undefined {
    if (typeof v === 'number' && Number.isFinite(v) && v >= min) return v;
    this.fail(path, `a number ≥ ${min}`, v);
    return undefined;
  }
  str(path: string, v: unknown, re?: RegExp, what = 'a string'): string | undefined {
    if (typeof v === 'string' && (!re || re.test(v))) return v;
    this.fail(path, what, v);
    return undefined;
  }
  oneOf<T extends string>(path: string, v: unknown, options: readonly T[]): T | undefined {
    if (typeof v === 'string' && (options as readonly string[]).includes(v)) return v as T;
    this.fail(path, `one of ${options.join(', ')}`, v);
    return undefined;
  }
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
const join = (p: string, k: string | number) => (typeof k === 'number' ? `${p}[${k}]` : p ? `${p}.${k}` : k);

const DEFAULT_IDENTITY: Record<string, IdentityDim> = {
  // the API key first: a header is only as trustworthy as the hop that set it
  tenant: { sources: [{ api_key: true }, { header: 'x-tenant-id' }] },
};

function identitySource(c: Checker, path: string, v: unknown): IdentitySource | undefined {
  const o = c.obj(path, v);
  if (!o) return undefined;
  const keys = Object.keys(o);
  if (keys.length !== 1) {
    c.fail(path, 'exactly one of header, api_key, metadata, path_segment, key_map, default, source_ip', v);
    return undefined;
  }
  const k = keys[0];
  switch (k) {
    case 'header': {
      const h = c.str(join(path, k), o[k], /^[A-Za-z0-9-]{1,128}$/, 'a header name');
      return h ? { header: h.toLowerCase() } : undefined;
    }
    case 'api_key':
      if (o[k] !== true) c.fail(join(path, k), 'true', o[k]);
      return { api_key: true };
    case 'metadata': {
      // "jwt_authn.payload.org_id" → filter "jwt_authn" (may contain dots: use "filter:path.to.field")
      const s = c.str(join(path, k), o[k], /^[^:]+:[^:]+$/, 'a "filter.name:field.path" string');
      if (!s) return undefined;
      const [filter, field] = s.split(':');
      return { metadata: { filter, path: field.split('.') } };
    }
    case 'path_segment': {
      const n = c.int(join(path, k), o[k], 0, 32);
      return n === undefined ? undefined : { path_segment: n };
    }
    case 'key_map': {
      const f = c.str(join(path, k), o[k], DIM, 'a field name of the key map entries (e.g. org, plan)');
      return f ? { key_map: f } : undefined;
    }
    case 'default': {
      const d = c.str(join(path, k), o[k], /^.{1,256}$/s, 'a non-empty string');
      return d ? { default: d } : undefined;
    }
    case 'source_ip': {
      const from = parseSourceIp(c, join(path, k), o[k]);
      return from ? { source_ip: from } : undefined;
    }
    default:
      c.problems.push(
        `${join(path, k)}: unknown identity source (allowed: header, api_key, metadata, path_segment, key_map, default, source_ip)`,
      );
      return undefined;
  }
}

type QueueFor = (path: string, o: Obj) => string | undefined;

function model(
  c: Checker,
  path: string,
  name: string,
  v: unknown,
  base: ModelConfig | undefined,
  queueFor: QueueFor,
): ModelConfig | undefined {
  const o = c.obj(path, v ?? {});
  if (!o) return undefined;
  c.keys(path, o, [
    'encoding',
    'price_usd_per_1m',
    'fallback',
    'default_max_output_tokens',
    'token_weight',
    'when_exhausted',
    'queue',
    'aliases',
  ]);
  const m: ModelConfig = {
    name,
    encoding: base?.encoding ?? 'cl100k_base',
    priceInPer1M: base?.priceInPer1M ?? 0,
    priceOutPer1M: base?.priceOutPer1M ?? 0,
    defaultMaxOutputTokens: base?.defaultMaxOutputTokens ?? 0,
    fallback: [],
    tokenWeight: base?.tokenWeight ?? 1,
    aliases: [],
  };
  if (o.aliases !== undefined) {
    const ap = join(path, 'aliases');
    if (!Array.isArray(o.aliases) || name === '*')
      c.fail(ap, name === '*' ? 'no aliases on "*"' : 'a list of model names', o.aliases);
    else
      o.aliases.forEach((a, i) => {
        if (c.str(join(ap, i), a, /^[^\s]{1,256}$/, 'a model name')) m.aliases.push(a as string);
      });
  }
  if (o.token_weight !== undefined) {
    const w = c.num(join(path, 'token_weight'), o.token_weight, 0);
    if (w !== undefined) m.tokenWeight = w;
  }
  const q = queueFor(path, o);
  if (q) m.queue = q;
  else if (base?.queue && o.when_exhausted === undefined) m.queue = base.queue; // inherit "*"'s
  if (o.encoding !== undefined)
    m.encoding = c.oneOf(join(path, 'encoding'), o.encoding, ENCODINGS) ?? m.encoding;
  if (o.price_usd_per_1m !== undefined) {
    const pp = join(path, 'price_usd_per_1m');
    const p = c.obj(pp, o.price_usd_per_1m);
    if (p) {
      c.keys(pp, p, ['input', 'output']);
      const i = c.num(join(pp, 'input'), p.input ?? 0, 0);
      const out = c.num(join(pp, 'output'), p.output ?? 0, 0);
      if (i !== undefined) m.priceInPer1M = usdToMicros(i);
      if (out !== undefined) m.priceOutPer1M = usdToMicros(out);
    }
  }
  if (o.default_max_output_tokens !== undefined) {
    m.defaultMaxOutputTokens =
      c.int(join(path, 'default_max_output_tokens'), o.default_max_output_tokens, 1, 10_000_000) ?? 0;
  }
  if (o.fallback !== undefined) {
    const fp = join(path, 'fallback');
    const list = typeof o.fallback === 'string' ? [o.fallback] : o.fallback;
    if (!Array.isArray(list) || list.length === 0)
      c.fail(fp, 'a model name or a list of model names', o.fallback);
    else
      list.forEach((f, i) => {
        if (c.str(join(fp, i), f, /^.{1,256}$/, 'a model name')) m.fallback.push(f as string);
      });
  }
  return m;
}

function limit(
  c: Checker,
  path: string,
  v: unknown,
  dims: Set<string>,
  queueFor: QueueFor,
): LimitConfig | undefined {
  const o = c.obj(path, v);
  if (!o) return undefined;
  c.keys(path, o, [
    'name',
    'per',
    'models',
    'requests',
    'tokens',
    'usd',
    'every',
    'reset',
    'timezone',
    'mode',
    'downgrade_below',
    'when',
    'when_exhausted',
    'queue',
    'count',
  ]);
  const name = c.str(join(path, 'name'), o.name, NAME, 'a name of 1-64 letters, digits, "_", "-", "."');
  let per: string[] = [];
  if (o.per !== undefined) {
    const list = typeof o.per === 'string' ? [o.per] : o.per;
    if (!Array.isArray(list)) c.fail(join(path, 'per'), 'a dimension name or a list of them', o.per);
    else
      per = list.filter((d, i) => {
        const ok = typeof d === 'string' && (d === 'model' || dims.has(d));
        if (!ok)
          c.fail(join(join(path, 'per'), i), `an identity dimension (${[...dims, 'model'].join(', ')})`, d);
        return ok;
      }) as string[];
  }
  let models: string[] | undefined;
  if (o.models !== undefined) {
    if (!Array.isArray(o.models) || o.models.length === 0 || o.models.some((m) => typeof m !== 'string'))
      c.fail(join(path, 'models'), 'a non-empty list of model names', o.models);
    else models = o.models as string[];
  }
  const kinds = (['requests', 'tokens', 'usd'] as LimitKind[]).filter((k) => o[k] !== undefined);
  let kind: LimitKind | undefined;
  let amount: number | undefined;
  if (kinds.length !== 1) {
    c.problems.push(
      `${path}: expected exactly one of requests, tokens, usd (found ${kinds.join(', ') || 'none'})`,
    );
  } else {
    kind = kinds[0];
    const kp = join(path, kind);
    if (kind === 'usd') {
      const usd = c.num(kp, o.usd, 0.000001);
      amount = usd === undefined ? undefined : usdToMicros(usd);
    } else amount = c.int(kp, o[kind], 1);
  }
  let window: LimitWindow | undefined;
  if ((o.every === undefined) === (o.reset === undefined)) {
    c.problems.push(`${path}: expected exactly one of every (rolling window) or reset (calendar quota)`);
  } else if (o.every !== undefined) {
    const ms = parseDuration(o.every);
    if (ms === undefined) c.fail(join(path, 'every'), 'a duration like 30s, 1m, 1h, 1d', o.every);
    else window = { type: 'rolling', ms };
    if (o.timezone !== undefined)
      c.problems.push(`${join(path, 'timezone')}: only valid with reset (calendar quota)`);
  } else {
    const unit = c.oneOf(join(path, 'reset'), o.reset, CALENDAR);
    let timezone: string | undefined;
    if (o.timezone !== undefined) {
      timezone = c.str(join(path, 'timezone'), o.timezone);
      if (timezone && !validTimezone(timezone)) {
        c.fail(join(path, 'timezone'), 'an IANA time zone name like Europe/Berlin', timezone);
        timezone = undefined;
      }
    }
    if (unit) window = { type: 'calendar', unit, ...(timezone && timezone !== 'UTC' ? { timezone } : {}) };
  }
  const mode = o.mode === undefined ? 'enforce' : c.oneOf(join(path, 'mode'), o.mode, ['enforce', 'shadow']);
  let downgradeBelow: number | undefined;
  if (o.downgrade_below !== undefined) {
    downgradeBelow = parseShare(o.downgrade_below);
    if (downgradeBelow === undefined)
      c.fail(join(path, 'downgrade_below'), 'a share like 20%', o.downgrade_below);
  }
  let when: Record<string, string> | undefined;
  if (o.when !== undefined) {
    const w = c.obj(join(path, 'when'), o.when);
    if (w) {
      when = {};
      for (const [k, val] of Object.entries(w)) {
        if (!dims.has(k))
          c.fail(join(join(path, 'when'), k), `an identity dimension (${[...dims].join(', ')})`, k);
        else if (typeof val !== 'string' && typeof val !== 'number')
          c.fail(join(join(path, 'when'), k), 'a value', val);
        else when[k] = String(val);
      }
    }
  }
  const queue = queueFor(path, o);
  let weighted = false;
  if (o.count !== undefined) {
    const cnt = c.oneOf(join(path, 'count'), o.count, ['each', 'weighted'] as const);
    weighted = cnt === 'weighted';
    if (weighted && kind !== 'requests')
      c.problems.push(`${join(path, 'count')}: weighted counting applies to requests limits only`);
  }
  if (!name || !kind || amount === undefined || !window || !mode) return undefined;
  return {
    name,
    per,
    models,
    kind,
    amount,
    window,
    shadow: mode === 'shadow',
    downgradeBelow,
    when,
    queue,
    weighted,
  };
}

function validTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** Validate and normalize a parsed YAML document. Throws ConfigError listing every problem. */
export function validateConfig(raw: unknown, file?: string): Config {
  const c = new Checker();
  const root = c.obj('', raw ?? {}) ?? {};
  c.keys('', root, ['identity', 'models', 'limits', 'queues', 'tool_weights', 'mode', 'server', 'store']);

  // queues (opt-in tier; needs Valkey): entries, bytes and a per-tenant share (src/config/queues.ts)
  const queues = parseQueues(c, root.queues);
  const queueFor = (path: string, o: Obj): string | undefined => {
    if (o.when_exhausted === undefined || o.when_exhausted === 'deny') {
      if (o.queue !== undefined)
        c.problems.push(`${join(path, 'queue')}: only valid with when_exhausted: queue`);
      return undefined;
    }
    if (o.when_exhausted !== 'queue') {
      c.fail(join(path, 'when_exhausted'), 'one of deny, queue', o.when_exhausted);
      return undefined;
    }
    if (o.queue === undefined) {
      if (queues.size === 1) return [...queues.keys()][0];
      c.problems.push(
        `${join(path, 'queue')}: expected the name of a queue under "queues" (${queues.size} configured)`,
      );
      return undefined;
    }
    if (typeof o.queue !== 'string' || !queues.has(o.queue)) {
      c.fail(
        join(path, 'queue'),
        `a queue defined under "queues" (${[...queues.keys()].join(', ') || 'none'})`,
        o.queue,
      );
      return undefined;
    }
    return o.queue;
  };

  // identity
  const identity: Record<string, IdentityDim> = {};
  let apiKeySecret = settings().apiKeySecret;
  let keyMapFile: string | undefined;
  let unknownKeys: UnknownKeys | undefined;
  if (root.identity !== undefined) {
    const id = c.obj('identity', root.identity);
    if (id) {
      for (const [dim, v] of Object.entries(id)) {
        const p = join('identity', dim);
        if (dim === 'api_key_secret_env') {
          const envName = c.str(p, v, /^[A-Z_][A-Z0-9_]*$/, 'an environment variable name');
          if (envName) apiKeySecret = envValue(envName);
          continue;
        }
        if (dim === 'key_map') {
          keyMapFile = c.str(p, v, /^.{1,4096}$/, 'a file path');
          continue;
        }
        if (dim === 'unknown_keys') {
          unknownKeys = parseUnknownKeys(c, p, v);
          continue;
        }
        if (!DIM.test(dim) || dim === 'model') {
          c.fail(p, 'a dimension name (lowercase letters, digits, _; not "model")', dim);
          continue;
        }
        // a list of sources, or { sources, values, default }
        let list: unknown = v;
        let values: Set<string> | undefined;
        let fallback: string | undefined;
        if (v && typeof v === 'object' && !Array.isArray(v)) {
          const o = v as Obj;
          c.keys(p, o, ['sources', 'values', 'default']);
          list = o.sources;
          if (o.values !== undefined) {
            if (
              !Array.isArray(o.values) ||
              o.values.length === 0 ||
              o.values.some((x) => typeof x !== 'string')
            )
              c.fail(join(p, 'values'), 'a non-empty list of strings', o.values);
            else values = new Set(o.values as string[]);
          }
          if (o.default !== undefined) {
            fallback = c.str(join(p, 'default'), o.default, /^.{1,256}$/s, 'a non-empty string');
            if (fallback && values && !values.has(fallback))
              c.problems.push(
                `${join(p, 'default')}: expected one of values (${[...values].join(', ')}), got "${fallback}"`,
              );
          }
        }
        if (!Array.isArray(list) || list.length === 0) {
          c.fail(
            join(p, list === v ? '' : 'sources').replace(/\.$/, ''),
            'a non-empty list of sources',
            list,
          );
          continue;
        }
        const sources = list
          .map((s, i) => identitySource(c, join(list === v ? p : join(p, 'sources'), i), s))
          .filter(Boolean) as IdentitySource[];
        identity[dim] = { sources, values, fallback };
      }
    }
  }
  if (Object.keys(identity).length === 0) Object.assign(identity, DEFAULT_IDENTITY);
  const usesKeyMap = Object.values(identity).some((d) => d.sources.some((s) => 'key_map' in s));
  if (usesKeyMap && !keyMapFile)
    c.problems.push('identity.key_map: expected a file path (a source uses key_map)');
  if (unknownKeys && !keyMapFile)
    c.problems.push('identity.unknown_keys: only valid with identity.key_map (which keys are known)');

  // tool weights
  const toolWeights = new Map<string, number>();
  if (root.tool_weights !== undefined) {
    const tw = c.obj('tool_weights', root.tool_weights);
    if (tw)
      for (const [tool, w] of Object.entries(tw)) {
        const n = c.int(join('tool_weights', tool), w, 0, 1_000_000);
        if (n !== undefined) toolWeights.set(tool, n);
      }
  }
  const dims = new Set(Object.keys(identity));

  // models
  const models = new Map<string, ModelConfig>();
  const rawModels = root.models === undefined ? {} : (c.obj('models', root.models) ?? {});
  const builtinDefault: ModelConfig = {
    name: '*',
    encoding: 'cl100k_base',
    priceInPer1M: 0,
    priceOutPer1M: 0,
    defaultMaxOutputTokens: 0,
    fallback: [],
    tokenWeight: 1,
    aliases: [],
  };
  const defaultModel =
    rawModels['*'] !== undefined
      ? model(c, 'models["*"]', '*', rawModels['*'], builtinDefault, queueFor)
      : builtinDefault;
  for (const [name, v] of Object.entries(rawModels)) {
    if (name === '*') continue;
    const m = model(c, `models["${name}"]`, name, v, defaultModel ?? builtinDefault, queueFor);
    if (m) models.set(name, m);
  }
  // fallback chains: targets are configured models (a typo must not invent a free model), no cycles
  if (defaultModel && defaultModel.fallback.length > 0)
    c.problems.push('models["*"].fallback: not supported on "*"; give each model its own fallback');
  for (const m of models.values()) {
    m.fallback.forEach((f, i) => {
      if (!models.has(f))
        c.problems.push(
          `models["${m.name}"].fallback${m.fallback.length > 1 ? `[${i}]` : ''}: expected a model configured under "models" (${[...models.keys()].join(', ')}), got "${f}"`,
        );
    });
  }
  for (const m of models.values()) {
    const chain = fallbackChain(models, m.name);
    if ('cycle' in chain) c.problems.push(`models["${m.name}"].fallback: cycle ${chain.cycle.join(' → ')}`);
  }

  // limits
  const limits: LimitConfig[] = [];
  if (root.limits !== undefined) {
    if (!Array.isArray(root.limits)) c.fail('limits', 'a list of limits', root.limits);
    else {
      const names = new Set<string>();
      root.limits.forEach((l, i) => {
        const lim = limit(c, join('limits', i), l, dims, queueFor);
        if (!lim) return;
        if (names.has(lim.name)) c.problems.push(`limits[${i}].name: duplicate limit name "${lim.name}"`);
        for (const [j, name] of (lim.models ?? []).entries()) {
          if (!models.has(name))
            c.problems.push(
              `limits[${i}].models[${j}]: expected a model configured under "models" (add \`${name}: {}\` there to price it like "*"), got "${name}"`,
            );
        }
        names.add(lim.name);
        limits.push(lim);
      });
    }
  }

  checkModels(models, defaultModel ?? builtinDefault, limits, c.problems);

  const mode =
    root.mode === undefined ? 'enforce' : (c.oneOf('mode', root.mode, ['enforce', 'shadow']) ?? 'enforce');

  // server
  const sv = root.server === undefined ? {} : (c.obj('server', root.server) ?? {});
  c.keys('server', sv, [
    'grpc_host',
    'grpc_port',
    'http_host',
    'http_port',
    'http_authz',
    'max_body_bytes',
    'decision_deadline',
    'non_llm_paths',
    'bytes_per_token',
    'image_tokens',
    'default_max_output_tokens',
    'max_concurrent_streams',
    'http2_stream_window',
    'http2_connection_window',
    'checks_per_turn',
    'grpc_direct_check',
    'partial_body',
    'overload_budget',
    'max_buffered_bytes',
  ]);
  if (sv.grpc_direct_check !== undefined && typeof sv.grpc_direct_check !== 'boolean')
    c.fail('server.grpc_direct_check', 'true or false', sv.grpc_direct_check);
  const deadline = sv.decision_deadline === undefined ? 50 : parseDuration(sv.decision_deadline);
  if (deadline === undefined)
    c.fail('server.decision_deadline', 'a duration like 50ms', sv.decision_deadline);
  const server0 = {
    ...parseListeners(c, sv),
    grpcPort: sv.grpc_port === undefined ? 9191 : (c.int('server.grpc_port', sv.grpc_port, 0, 65535) ?? 9191),
    httpPort: sv.http_port === undefined ? 8181 : (c.int('server.http_port', sv.http_port, 0, 65535) ?? 8181),
    maxBodyBytes:
      sv.max_body_bytes === undefined
        ? 8 * 1024 * 1024
        : (c.int('server.max_body_bytes', sv.max_body_bytes, 1024, 256 * 1024 * 1024) ?? 8 * 1024 * 1024),
    decisionDeadlineMs: deadline ?? 50,
    nonLlmPaths:
      sv.non_llm_paths === undefined
        ? 'allow'
        : (c.oneOf('server.non_llm_paths', sv.non_llm_paths, ['allow', 'deny'] as const) ?? 'allow'),
    bytesPerToken:
      sv.bytes_per_token === undefined ? 4 : (c.num('server.bytes_per_token', sv.bytes_per_token, 0.5) ?? 4),
    imageTokens:
      sv.image_tokens === undefined
        ? 765
        : (c.int('server.image_tokens', sv.image_tokens, 0, 100_000) ?? 765),
    defaultMaxOutputTokens:
      sv.default_max_output_tokens === undefined
        ? 4096
        : (c.int('server.default_max_output_tokens', sv.default_max_output_tokens, 1, 10_000_000) ?? 4096),
    maxConcurrentStreams:
      sv.max_concurrent_streams === undefined
        ? 128
        : (c.int('server.max_concurrent_streams', sv.max_concurrent_streams, 1, 100_000) ?? 128),
    checksPerTurn:
      sv.checks_per_turn === undefined
        ? DEFAULT_CHECKS_PER_TURN
        : (c.int('server.checks_per_turn', sv.checks_per_turn, 0, 100_000) ?? DEFAULT_CHECKS_PER_TURN),
    grpcDirectCheck: sv.grpc_direct_check !== false,
    partialBody:
      sv.partial_body === undefined
        ? 'costliest'
        : (c.oneOf('server.partial_body', sv.partial_body, ['costliest', 'deny'] as const) ?? 'costliest'),
    http2StreamWindow:
      sv.http2_stream_window === undefined
        ? DEFAULT_WINDOW
        : (c.int('server.http2_stream_window', sv.http2_stream_window, DEFAULT_WINDOW, MAX_WINDOW) ??
          DEFAULT_WINDOW),
    http2ConnectionWindow:
      sv.http2_connection_window === undefined
        ? DEFAULT_WINDOW
        : (c.int('server.http2_connection_window', sv.http2_connection_window, DEFAULT_WINDOW, MAX_WINDOW) ??
          DEFAULT_WINDOW),
  };
  const server = { ...server0, ...overloadServer(c, sv, server0) };

  checkPortClash(c, server);

  // store
  const st = root.store === undefined ? {} : (c.obj('store', root.store) ?? {});
  c.keys('store', st, [
    'prefix',
    'timeout',
    'breaker',
    'on_store_failure',
    'replicas',
    'deny_cache',
    'client',
    'memory_max_keys',
    'max_inflight',
  ]);
  const timeoutMs = st.timeout === undefined ? 25 : parseDuration(st.timeout);
  if (timeoutMs === undefined) c.fail('store.timeout', 'a duration like 25ms', st.timeout);
  const br = st.breaker === undefined ? {} : (c.obj('store.breaker', st.breaker) ?? {});
  c.keys('store.breaker', br, ['failures', 'open_for']);
  const openMs = br.open_for === undefined ? 30_000 : parseDuration(br.open_for);
  if (openMs === undefined) c.fail('store.breaker.open_for', 'a duration like 30s', br.open_for);
  const store = {
    prefix:
      st.prefix === undefined
        ? 'tollgate'
        : (c.str(
            'store.prefix',
            st.prefix,
            /^[A-Za-z0-9_-]{1,32}$/,
            'a short prefix of letters, digits, _ or -',
          ) ?? 'tollgate'),
    timeoutMs: timeoutMs ?? 25,
    breakerFailures:
      br.failures === undefined ? 3 : (c.int('store.breaker.failures', br.failures, 1, 1000) ?? 3),
    breakerOpenMs: openMs ?? 30_000,
    onStoreFailure: (st.on_store_failure === undefined
      ? 'allow'
      : (c.oneOf('store.on_store_failure', st.on_store_failure, ['allow', 'deny', 'local'] as const) ??
        'allow')) as FailurePolicy,
    replicas: st.replicas === undefined ? 1 : (c.int('store.replicas', st.replicas, 1, 10_000) ?? 1),
    denyCache: true,
    client: (st.client === undefined
      ? 'resp'
      : (c.oneOf('store.client', st.client, ['resp', 'iovalkey'] as const) ?? 'resp')) as StoreClient,
    memoryMaxKeys:
      st.memory_max_keys === undefined
        ? DEFAULT_MEMORY_MAX_KEYS
        : (c.int('store.memory_max_keys', st.memory_max_keys, 100, 100_000_000) ?? DEFAULT_MEMORY_MAX_KEYS),
    maxInflight:
      st.max_inflight === undefined
        ? DEFAULT_MAX_INFLIGHT
        : (c.int('store.max_inflight', st.max_inflight, 1, 100_000) ?? DEFAULT_MAX_INFLIGHT),
  };
  if (st.deny_cache !== undefined) {
    if (typeof st.deny_cache !== 'boolean') c.fail('store.deny_cache', 'true or false', st.deny_cache);
    else store.denyCache = st.deny_cache;
  }
  if (store.timeoutMs >= server.decisionDeadlineMs) {
    c.problems.push(
      `store.timeout: expected less than server.decision_deadline (${server.decisionDeadlineMs} ms), got ${store.timeoutMs} ms`,
    );
  }

  if (c.problems.length > 0) throw new ConfigError(c.problems, file);
  return {
    identity,
    keyMap: keyMapFile
      ? { file: keyMapFile, entries: new Map(), unknownKeys: unknownKeys ?? 'own' }
      : undefined,
    toolWeights,
    apiKeySecret,
    models,
    defaultModel: defaultModel ?? builtinDefault,
    limits,
    queues,
    mode: mode as 'enforce' | 'shadow',
    server,
    store,
  };
}

/**
 * The candidates for a requested model, best first: the model itself, then its fallbacks.
 * A list `fallback: [a, b]` is an explicit chain; a single `fallback: a` continues with a's own fallback.
 */
export function fallbackChain(
  models: Map<string, ModelConfig>,
  name: string,
): string[] | { cycle: string[] } {
  const chain = [name];
  let cur = models.get(name);
  while (cur && cur.fallback.length > 0) {
    for (const f of cur.fallback) {
      if (chain.includes(f)) return { cycle: [...chain, f] };
      chain.push(f);
    }
    cur = cur.fallback.length === 1 ? models.get(cur.fallback[0]) : undefined;
  }
  return chain;
}
