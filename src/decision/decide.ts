/**
 * The decision pipeline: CheckRequest attributes → parse → identity → tokens → cost → one atomic store
 * call → Decision. Pure of gRPC: the authz server and the HTTP mode only translate its result.
 */
import { fallbackChain } from '../config/schema.js';
import type { Config } from '../config/types.js';
import { parseBody } from '../dialects/body.js';
import { modelKeyProblem } from '../dialects/model-key.js';
import { classifyPath, keyHeaderOf } from '../dialects/route.js';
import { isParseError, type ParsedCall } from '../dialects/types.js';
import { BreakerOpenError, OverloadedError, StoreFullError } from '../errors.js';
import { type Identity, logTag, resolveIdentity } from '../identity/identity.js';
import type { TokenPool } from '../offload/pool.js';
import type { EncodingPlan } from '../offload/worker.js';
import { modelResolver } from '../policy/models.js';
import {
  type BuiltPlan,
  buildPlan,
  type CandidateCost,
  modelConfig,
  priceMicros,
  requestWeight,
  reservedOutput,
} from '../policy/plan.js';
import { Breaker, type BreakerState } from '../resilience/breaker.js';
import { StoreGate } from '../resilience/gate.js';
import { MemoryStore } from '../store/memory.js';
import { type CheckResult, EntryStatus, Outcome, type Store } from '../store/types.js';
import { countPromptTokens } from '../tokens/count.js';
import { getCounter } from '../tokens/encoders.js';
import { DenyCache } from './deny-cache.js';
import { type Row, rateLimitHeaders } from './headers.js';
import { overloaded } from './overloaded.js';
import { TurnPacer } from './pacer.js';
import { queueFullText, queueKeys, queueRequest } from './queue-tier.js';
import type { AllowDecision, CheckInput, Decision, DecisionStats, DenyDecision, Headers } from './types.js';
import { unknownKeyGate } from './unknown-key.js';
import { costliestModel, partialRefused, refuseReroute, type Unproven } from './unproven.js';

export interface DeciderDeps {
  store: Store;
  pool?: TokenPool;
  onBreakerChange?: (to: BreakerState, from: BreakerState) => void;
  /** Called after each store call with its duration and whether it failed. */
  onStoreCall?: (seconds: number, ok: boolean) => void;
  /** Called when a check is shed as overloaded (`stage`: never sent, or sent and given up). */
  onOverloaded?: (stage: 'queued' | 'sent') => void;
}

const JSON_CT = 'application/json';
/**
 * Bodies of at least this many bytes are parsed and counted in a token worker. Below it, parsing and
 * counting here (~2 µs per 100 bytes) costs less than a worker round trip under load.
 */
export const OFFLOAD_BYTES = 32 * 1024;
const TOLLGATE_PREFIX = 'x-tollgate-';
export class Decider {
  private cfg: Config;
  readonly breaker: Breaker;
  private local: MemoryStore;
  /** Fallback chains of configured models, computed once per config. */
  private chains = new Map<string, string[]>();
  private chainsFor?: Config;

  private candidatesOf(cfg: Config, model: string): string[] {
    if (this.chainsFor !== cfg) {
      this.chains = new Map();
      this.chainsFor = cfg;
    }
    let c = this.chains.get(model);
    if (!c) {
      const chain = fallbackChain(cfg.models, model);
      c = Array.isArray(chain) ? chain : [model];
      if (cfg.models.has(model)) this.chains.set(model, c); // bounded by the config
    }
    return c;
  }

  /** For token workers: the encodings each model's fallback chain needs, computed once per config. */
  private encodingsOf(cfg: Config): EncodingPlan {
    if (this.encodingPlanFor !== cfg || !this.encodingPlan) {
      const byModel: Record<string, string[]> = Object.create(null);
      for (const [key, name] of modelResolver(cfg).keys)
        byModel[key] = [...new Set(this.candidatesOf(cfg, name).map((n) => modelConfig(cfg, n).encoding))];
      this.encodingPlan = { byModel, other: [cfg.defaultModel.encoding] };
      this.encodingPlanFor = cfg;
    }
    return this.encodingPlan;
  }

  private encodingPlan?: EncodingPlan;
  private encodingPlanFor?: Config;

  /** "Denied until T" answers from Valkey, reused without a round trip until T (Valkey store only). */
  readonly denyCache = new DenyCache();

  constructor(
    cfg: Config,
    private readonly deps: DeciderDeps,
  ) {
    this.cfg = cfg;
    const store = deps.store;
    this.breaker = new Breaker(
      { failures: cfg.store.breakerFailures, openMs: cfg.store.breakerOpenMs },
      deps.onBreakerChange,
      Date.now,
      (since) => (store.lastReplyAt ?? Number.NEGATIVE_INFINITY) >= since,
    );
    this.local = new MemoryStore(Date.now, cfg.store.replicas, cfg.store.memoryMaxKeys);
    this.gate = new StoreGate(
      () => this.cfg.store.maxInflight,
      () => this.cfg.store.timeoutMs,
      () => store.progressAt ?? Number.NEGATIVE_INFINITY,
    );
  }

  /** Store calls in flight per process (store.max_inflight; see resilience/gate.ts). */
  readonly gate: StoreGate;

  /** Load every encoding the config uses (here and in the token workers), so no call pays for it. */
  async warm(cfg: Config = this.cfg): Promise<void> {
    const encodings = new Set([
      cfg.defaultModel.encoding,
      ...[...cfg.models.values()].map((m) => m.encoding),
    ]);
    for (const e of encodings) getCounter(e); // the hot path's counters (shared-table BPE or tiktoken)
    await this.deps.pool?.warm(encodings);
  }

  get config(): Config {
    return this.cfg;
  }

  /** Swap in a new validated config; in-flight decisions keep the one they started with. */
  setConfig(cfg: Config): void {
    void this.warm(cfg).catch(() => {});
    this.breaker.configure({ failures: cfg.store.breakerFailures, openMs: cfg.store.breakerOpenMs });
    this.deps.store.setTimeoutMs?.(cfg.store.timeoutMs);
    if (cfg.store.replicas !== this.cfg.store.replicas) {
      void this.local.close();
      this.local = new MemoryStore(Date.now, cfg.store.replicas, cfg.store.memoryMaxKeys);
    }
    this.local.setMaxKeys(cfg.store.memoryMaxKeys);
    if (this.deps.store instanceof MemoryStore) this.deps.store.setMaxKeys(cfg.store.memoryMaxKeys);
    this.cfg = cfg;
    this.denyCache.clear();
  }

  /** Decisions started per event-loop turn (server.checks_per_turn; see pacer.ts). */
  readonly pacer = new TurnPacer();

  async decide(input: CheckInput): Promise<Decision> {
    const arrivedAt = performance.now(); // the overload budget counts from here
    const wait = this.pacer.enter(this.cfg.server.checksPerTurn);
    if (wait) await wait;
    const cfg = this.cfg; // one config for the whole decision, even if a reload lands meanwhile
    const removeHeaders = clientTollgateHeaders(input.headers);
    const route = classifyPath(input.path);
    if (!route) {
      if (cfg.server.nonLlmPaths === 'allow') return allow('not-llm', {}, {}, removeHeaders, {});
      return deny(
        'not-llm',
        403,
        {},
        errorBody(
          'This path is not an LLM API path tollgate knows.',
          'invalid_request_error',
          'path_not_allowed',
        ),
        {},
      );
    }

    // identity.unknown_keys: deny — refused before any work is spent on the call
    const gate = unknownKeyGate(cfg, input.headers, keyHeaderOf(route));
    if (gate && 'denied' in gate) return gate.denied;

    // --- body -------------------------------------------------------------------------------------
    const body = input.body;
    const len = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    const declared = Number(input.headers['content-length']);
    // Partial (Envoy stopped buffering), missing, or larger than we parse: estimate from the size.
    const partial =
      input.headers['x-envoy-auth-partial-body'] === 'true' ||
      (Number.isFinite(declared) && declared > len) ||
      len === 0 ||
      len > cfg.server.maxBodyBytes;
    let call: ParsedCall | undefined;
    let model: string | undefined;
    let estimatedPrompt = 0;
    let estimated = partial;
    /** Prompt tokens by encoding, when a worker counted them (the call then carries no texts). */
    let counted: Record<string, number> | undefined;
    /** Why this call's model cannot be trusted (then it is never rerouted); set below. */
    let unproven: Unproven | undefined;
    if (partial) {
      // Envoy stopped buffering (max_request_bytes) or sent no body: estimate from the declared size.
      // A prefix cannot prove the top-level model (the last duplicate key wins): charge the costliest
      // model the call could be, unless the path names it (Azure), or refuse (partial_body: deny).
      const bytes = Math.max(Number.isFinite(declared) && declared > 0 ? declared : 0, len);
      if (cfg.server.partialBody === 'deny' && route.azureDeployment === undefined)
        return partialRefused(bytes === 0);
      estimatedPrompt = Math.ceil(bytes / cfg.server.bytesPerToken);
      model = route.azureDeployment ?? costliestModel(cfg, estimatedPrompt);
      unproven = 'partial-body';
    } else {
      const pool = this.deps.pool;
      if (pool?.mode === 'workers' && len >= OFFLOAD_BYTES) {
        // Large body: parsed and counted in a token worker, so the event loop never parses it or
        // holds its strings. If the worker fails, it is parsed and counted here instead, unless the
        // pool moved the bytes to the worker (then they are gone: estimated from the size, like a
        // partial body, and priced as the costliest configured model, so a crash never undercharges).
        // Not with a queue tier configured: a queued call keeps its body for the stream.
        const imageTokens = cfg.server.imageTokens;
        const r = await pool
          .parseAndCount(
            route.dialect,
            body!,
            route.azureDeployment,
            this.encodingsOf(cfg),
            { imageTokens },
            cfg.queues.size === 0,
          )
          .catch(() => undefined);
        if (r && 'error' in r) return badRequest(r.error);
        if (r) {
          call = r.call;
          model = r.call.model!;
          counted = r.tokens;
        } else if (typeof body !== 'string' && body!.byteLength === 0) {
          estimatedPrompt = Math.ceil(len / cfg.server.bytesPerToken);
          estimated = true;
          model = route.azureDeployment ?? costliestModel(cfg, estimatedPrompt);
          unproven = 'partial-body';
        }
      }
      if (!call && !estimated) {
        const parsed = parseBody(route.dialect, body!, route.azureDeployment);
        if (isParseError(parsed)) return badRequest(parsed.error);
        call = parsed;
        model = parsed.model!;
      }
    }

    if (model === undefined) return badRequest('model is required');

    // --- identity, candidates, costs ---------------------------------------------------------------
    const id = resolveIdentity(cfg, {
      path: input.path,
      headers: input.headers,
      metadata: input.metadata,
      sourceAddress: input.sourceAddress,
      keyDigest: gate?.digest,
      keyHeader: keyHeaderOf(route),
    });
    // The configured model the request means (case, snapshots, provider prefixes, aliases), unless it
    // was chosen here as the costliest; a name that matches none is charged as "*" and counted.
    let unknownModel = false;
    if (!estimated || route.azureDeployment !== undefined) {
      const resolved = modelResolver(cfg).resolve(model);
      if (resolved === undefined) unknownModel = true;
      else model = resolved;
    }
    let names = this.candidatesOf(cfg, model);
    let refused = false;
    if (names.length > 1) {
      // A reroute makes Envoy rewrite the body's model: only for a body whose model key is unambiguous.
      // (a token worker already checked the bytes it parsed: they may have been moved there)
      if (!unproven && call && route.azureDeployment === undefined)
        unproven = counted ? call.modelKey : modelKeyProblem(body!);
      if (unproven) {
        names = names.slice(0, 1);
        refused = true;
      }
    }
    const tokensByEncoding = new Map<string, number>();
    const costs: CandidateCost[] = [];
    for (const name of names) {
      const mc = modelConfig(cfg, name);
      let prompt = estimatedPrompt;
      if (call) {
        let t = counted ? counted[mc.encoding] : tokensByEncoding.get(mc.encoding);
        if (t === undefined) {
          if (counted) throw new Error(`internal: worker did not count ${mc.encoding}`);
          // Bodies below OFFLOAD_BYTES (or whose worker failed): counted here, synchronously.
          t = countPromptTokens(call, mc.encoding, { imageTokens: cfg.server.imageTokens });
          tokensByEncoding.set(mc.encoding, t);
        }
        prompt = t;
      }
      const output =
        call?.dialect === 'openai.embeddings'
          ? 0
          : reservedOutput(cfg, mc, call?.requestedOutput, call?.n ?? 1);
      costs.push({
        model: name,
        config: mc,
        promptTokens: prompt,
        outputTokens: output,
        micros: priceMicros(mc, prompt, output),
      });
    }
    const stats: DecisionStats = {
      model,
      promptTokens: costs[0].promptTokens,
      reservedTokens: costs[0].outputTokens,
      micros: costs[0].micros,
      estimated: estimated || undefined,
      tenantTag: logTag(id.tenant),
      unknownModel: unknownModel || undefined,
    };
    const built = buildPlan(cfg, id, costs, Date.now(), requestWeight(cfg, call?.tools));
    const queueName =
      costs[0].config.queue ??
      cfg.limits.find((l) => l.queue && built.meta[0].some((m) => m.limit === l))?.queue;
    if (queueName && this.deps.store.kind === 'valkey' && call && body !== undefined) {
      // Queue tier: if no candidate fits, the script appends the call to this stream in the same step.
      // Bounded in entries and bytes, per queue and per tenant (src/decision/queue-tier.ts).
      const q = cfg.queues.get(queueName)!;
      built.plan.keys.push(...queueKeys(cfg, q));
      const cost = costs[0].promptTokens + costs[0].outputTokens;
      built.plan.queue = queueRequest(q, id.tenant ?? 'anonymous', model, cost, body);
    }
    const marks: Headers = estimated ? { 'x-tollgate-estimated': 'true' } : {};

    if (built.meta.every((m) => m.length === 0)) {
      stats.chosenModel = model;
      return allow('ok', { ...marks }, { ...marks }, removeHeaders, stats);
    }

    // --- the one atomic store call, bounded by the breaker and the decision deadline -------------
    let result: CheckResult;
    let degraded: string | undefined;
    const cacheable = this.deps.store.kind === 'valkey' && cfg.store.denyCache;
    const cached = cacheable ? this.denyCache.lookup(built.plan) : undefined;
    try {
      if (cached) {
        stats.cached = true;
        result = cached;
      } else {
        result = await this.storeCheck(built, arrivedAt + cfg.server.overloadBudgetMs, cacheable, stats);
      }
    } catch (err) {
      if (err instanceof OverloadedError) {
        this.deps.onOverloaded?.(err.stage);
        return overloaded(built, marks, removeHeaders, stats);
      }
      // Valkey unreachable or slow, or the in-memory store at its bound (store.memory_max_keys)
      const why = err instanceof StoreFullError ? 'store-full' : 'store-unavailable';
      const policy = cfg.store.onStoreFailure;
      if (policy === 'deny') {
        return deny(
          'store-unavailable',
          503,
          {},
          errorBody(
            'Rate limiter temporarily unavailable; try again shortly.',
            'server_error',
            'rate_limiter_unavailable',
          ),
          stats,
        );
      }
      const local = policy === 'local' ? this.localCheck(built) : undefined;
      if (!local) {
        const h = { ...marks, 'x-tollgate-degraded': why };
        return allow('degraded', h, { ...h }, removeHeaders, stats);
      }
      result = local;
      degraded = `${why};local`;
    }
    const d = this.interpret(built, costs, result, stats, marks, removeHeaders, degraded, id);
    return refused ? refuseReroute(d, unproven!) : d;
  }

  /** The on_store_failure: local store (for its metrics). */
  get localStore(): MemoryStore {
    return this.local;
  }

  /** on_store_failure: local — the per-replica share; undefined when that store is full too. */
  private localCheck(built: BuiltPlan): CheckResult | undefined {
    try {
      return this.local.checkSync(built.plan);
    } catch {
      return undefined;
    }
  }

  /**
   * The store call: a slot among store.max_inflight (waiting for one, the deny cache is asked again
   * when it comes), then the breaker. Time bounds (docs/overload.md): the store's per-call timeout on
   * its silence (ValkeyStore: store.timeout, event-loop-aware) fails per on_store_failure; `budgetAt`
   * sheds a check the store is still working towards (OverloadedError). Rejects with either.
   */
  private async storeCheck(
    built: BuiltPlan,
    budgetAt: number,
    cacheable: boolean,
    stats: DecisionStats,
  ): Promise<CheckResult> {
    const store = this.deps.store;
    if (store.kind === 'memory') return store.check(built.plan);
    const wait = this.gate.acquire(budgetAt);
    if (wait) {
      await wait;
      const cached = cacheable ? this.denyCache.lookup(built.plan) : undefined;
      if (cached) {
        this.gate.release();
        stats.cached = true;
        return cached;
      }
    }
    const t0 = performance.now();
    try {
      // Budget already spent (CPU backlog before the store call): never send what we cannot wait for.
      if (t0 >= budgetAt) throw new OverloadedError('queued');
      const r = await this.breaker.run(() => store.check(built.plan, budgetAt));
      this.deps.onStoreCall?.((performance.now() - t0) / 1000, true);
      if (cacheable) this.denyCache.remember(built.plan, r, t0);
      return r;
    } catch (e) {
      if (!(e instanceof BreakerOpenError || e instanceof OverloadedError))
        this.deps.onStoreCall?.((performance.now() - t0) / 1000, false);
      throw e;
    } finally {
      this.gate.release();
    }
  }

  private interpret(
    built: BuiltPlan,
    costs: CandidateCost[],
    result: CheckResult,
    stats: DecisionStats,
    marks: Headers,
    removeHeaders: string[],
    degraded: string | undefined,
    _id: Identity,
  ): Decision {
    const rowsOf = (ci: number): Row[] =>
      built.meta[ci].map((meta, i) => ({ meta, r: result.candidates[ci][i] }));
    const extra: Headers = { ...marks };
    if (degraded) extra['x-tollgate-degraded'] = degraded;

    if (result.outcome === Outcome.Allowed) {
      const ci = result.chosen;
      const rows = rowsOf(ci);
      const up: Headers = { ...extra };
      const resp: Headers = { ...extra };
      rateLimitHeaders(resp, rows, result.nowMs);
      const chosen = costs[ci];
      stats.chosenModel = chosen.model;
      stats.promptTokens = chosen.promptTokens;
      stats.reservedTokens = chosen.outputTokens;
      stats.micros = chosen.micros;
      let reason: AllowDecision['reason'] = degraded ? 'degraded' : 'ok';
      if (ci > 0) {
        up['x-tollgate-model'] = resp['x-tollgate-model'] = chosen.model;
        up['x-tollgate-rerouted-from'] = resp['x-tollgate-rerouted-from'] = costs[0].model;
        reason = 'rerouted';
      }
      const shadowHit = rows.find(
        (r) => r.meta.shadow && r.r.status !== EntryStatus.Fits && r.r.status !== EntryStatus.BelowDowngrade,
      );
      if (shadowHit) {
        up['x-tollgate-shadow'] = resp['x-tollgate-shadow'] = `deny;limit=${shadowHit.meta.limit.name}`;
        stats.limit = shadowHit.meta.limit.name;
        if (reason === 'ok') reason = 'shadow';
      }
      return allow(reason, up, resp, removeHeaders, stats);
    }

    if (result.outcome === Outcome.Queued) {
      const q = built.plan.queue!;
      stats.queue = q.name;
      stats.queueId = q.id;
      const h: Headers = { ...extra, 'content-type': JSON_CT, 'x-tollgate-queue-id': q.id };
      return deny('queued', 202, h, JSON.stringify({ status: 'queued', id: q.id, queue: q.name }), stats);
    }

    // Denied: describe the candidate that would fit soonest (or the requested one if none ever fits).
    const never = result.outcome === Outcome.Never;
    let best = 0;
    if (!never) {
      let bestRetry = Number.POSITIVE_INFINITY;
      built.meta.forEach((_, ci) => {
        const rows = rowsOf(ci).filter(
          (r) =>
            !r.meta.shadow && r.r.status !== EntryStatus.Fits && r.r.status !== EntryStatus.BelowDowngrade,
        );
        if (rows.some((r) => r.r.status === EntryStatus.Never)) return;
        const retry = Math.max(0, ...rows.map((r) => r.r.retryMs));
        if (retry < bestRetry) {
          bestRetry = retry;
          best = ci;
        }
      });
    }
    const rows = rowsOf(best);
    const blocking = rows.filter(
      (r) => !r.meta.shadow && (r.r.status === EntryStatus.Exceeded || r.r.status === EntryStatus.Never),
    );
    const binding = blocking.reduce<Row | undefined>(
      (a, r) =>
        !a ||
        (r.r.status === EntryStatus.Never ? 1e15 : r.r.retryMs) >
          (a.r.status === EntryStatus.Never ? 1e15 : a.r.retryMs)
          ? r
          : a,
      undefined,
    )!;
    const h: Headers = { ...extra, 'content-type': JSON_CT };
    rateLimitHeaders(h, rows, result.nowMs, binding);
    const l = binding.meta.limit;
    stats.limit = l.name;
    const candidates = built.meta.map((m, ci) => ({
      model: costs[ci].model,
      limits: m
        .filter(
          (_, i) =>
            !m[i].shadow &&
            result.candidates[ci][i].status !== EntryStatus.Fits &&
            result.candidates[ci][i].status !== EntryStatus.BelowDowngrade,
        )
        .map((x) => x.limit.name),
    }));
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
        ...(candidates.length > 1 ? { candidates } : {}),
      };
      return deny('never-fits', 429, h, JSON.stringify(body), stats);
    }
    const retryMs = Math.max(1, result.retryMs);
    const retryS = Math.max(1, Math.ceil(retryMs / 1000));
    h['retry-after'] = String(retryS);
    h['retry-after-ms'] = String(retryMs);
    const body = {
      ...errorObj(
        `Rate limit reached for ${l.kind} on limit "${l.name}" (per ${binding.meta.scope}): limit ${l.amount}, remaining ${Math.max(0, binding.r.remaining)}, this request needs ${binding.meta.cost} ${unit}. Please try again in ${retryS}s.`,
        l.kind,
        'rate_limit_exceeded',
      ),
      retry_after_seconds: retryS,
      limit: l.name,
      ...(candidates.length > 1 ? { candidates } : {}),
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

  async close(): Promise<void> {
    await this.local.close();
  }
}

function clientTollgateHeaders(headers: Record<string, string>): string[] {
  const out: string[] = [];
  for (const k in headers) if (k.startsWith(TOLLGATE_PREFIX)) out.push(k);
  return out;
}

function allow(
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

function deny(
  reason: DenyDecision['reason'],
  httpStatus: number,
  headers: Headers,
  body: string,
  stats: DecisionStats,
): DenyDecision {
  if (!headers['content-type']) headers['content-type'] = JSON_CT;
  return { kind: 'deny', reason, httpStatus, headers, body, stats };
}

function errorObj(message: string, type: string, code: string) {
  return { error: { message, type, code, param: null } };
}

function errorBody(message: string, type: string, code: string): string {
  return JSON.stringify(errorObj(message, type, code));
}

function badRequest(message: string): DenyDecision {
  return deny('bad-request', 400, {}, errorBody(message, 'invalid_request_error', 'invalid_request'), {});
}
