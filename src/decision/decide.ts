/**
 * The decision pipeline: CheckRequest attributes → one Decision. Pure of gRPC: the authz server and
 * the HTTP mode only translate its result. `Decider.decide` reads top to bottom as its stages:
 *  1. pace (pacer.ts), route the path (not an LLM path: allow or 403), refuse unknown keys
 *     (unknown-key.ts);
 *  2. read the body: parse it here or in a token worker, or estimate a partial one (body.ts,
 *     unproven.ts);
 *  3. identity, then candidates and costs: the model meant, its fallback chain, tokens and price,
 *     and the store plan with the queue tier's part (costs.ts, queue-tier.ts);
 *     The cache tier's query (cache-tier.ts, src/cache/): the call's key, recorded for the fill;
 *  4. the one store call: the deny cache (deny-cache.ts), the guarded store (resilience/
 *     guarded-store.ts: gate, breaker, local fallback) and the on_store_failure policy (store-call.ts,
 *     overloaded.ts);
 *     With `cache.serve: always`, or when the call may queue, the answer cache is looked up first;
 *  5. no candidate fits: the answer cache, else the queue or the deny (cache-tier.ts);
 *     the answer: the store result as an allow, deny or queued Decision (answer.ts, headers.ts), a
 *     refused reroute said so (unproven.ts).
 * types.ts holds the Decision and CheckInput shapes.
 */
import type { AnswerCache } from '../cache/cache.js';
import type { Config } from '../config/types.js';
import { classifyPath, keyHeaderOf } from '../dialects/route.js';
import { logTag, resolveIdentity } from '../identity/identity.js';
import type { TokenPool } from '../offload/pool.js';
import type { BreakerState } from '../resilience/breaker.js';
import { GuardedStore } from '../resilience/guarded-store.js';
import type { Store } from '../store/types.js';
import { getCounter } from '../tokens/encoders.js';
import { allow, answer, deny, errorBody } from './answer.js';
import { readBody } from './body.js';
import { CacheStep } from './cache-tier.js';
import { ModelChains, planCall, priceCall } from './costs.js';
import { DenyCache } from './deny-cache.js';
import { TurnPacer } from './pacer.js';
import { callStore } from './store-call.js';
import type { CheckInput, Decision, DecisionStats, Headers } from './types.js';
import { unknownKeyGate } from './unknown-key.js';
import { refuseReroute } from './unproven.js';

export { OFFLOAD_BYTES } from './body.js';

export interface DeciderDeps {
  store: Store;
  pool?: TokenPool;
  onBreakerChange?: (to: BreakerState, from: BreakerState) => void;
  /** Called after each store call with its duration and whether it failed. */
  onStoreCall?: (seconds: number, ok: boolean) => void;
  /** Called when a check is shed as overloaded (`stage`: never sent, or sent and given up). */
  onOverloaded?: (stage: 'queued' | 'sent') => void;
  /**
   * The wall clock (ms since the epoch) that plans are made at: calendar windows, reservation records.
   * Date.now unless simulated (`tollgate replay`, with a MemoryStore on the same clock).
   */
  clock?: () => number;
  /** The answer cache (when cache: is configured). */
  cache?: AnswerCache;
}

const TOLLGATE_PREFIX = 'x-tollgate-';

export class Decider {
  private cfg: Config;
  /** The store behind its gate, breaker and local fallback (resilience/guarded-store.ts). */
  readonly guard: GuardedStore;
  /** "Denied until T" answers from Valkey, reused without a round trip until T (Valkey store only). */
  readonly denyCache = new DenyCache();
  /** Decisions started per event-loop turn (server.checks_per_turn; see pacer.ts). */
  readonly pacer = new TurnPacer();
  private readonly chains = new ModelChains();

  constructor(
    cfg: Config,
    private readonly deps: DeciderDeps,
  ) {
    this.cfg = cfg;
    this.guard = new GuardedStore(deps.store, cfg.store, {
      onBreakerChange: deps.onBreakerChange,
      onStoreCall: deps.onStoreCall,
    });
  }

  /** The answer cache, when configured (src/cache/). */
  get cache(): AnswerCache | undefined {
    return this.deps.cache;
  }

  /** The store's circuit breaker (for metrics and probes). */
  get breaker() {
    return this.guard.breaker;
  }

  /** Store calls in flight per process (store.max_inflight; see resilience/gate.ts). */
  get gate() {
    return this.guard.gate;
  }

  /** The on_store_failure: local store (for its metrics). */
  get localStore() {
    return this.guard.local;
  }

  get config(): Config {
    return this.cfg;
  }

  /** Load every encoding the config uses (here and in the token workers), so no call pays for it. */
  async warm(cfg: Config = this.cfg): Promise<void> {
    const encodings = new Set([
      cfg.defaultModel.encoding,
      ...[...cfg.models.values()].map((m) => m.encoding),
    ]);
    for (const e of encodings) getCounter(e); // the hot path's counters (shared-table BPE or tiktoken)
    await this.deps.pool?.warm(encodings);
  }

  /** Swap in a new validated config; in-flight decisions keep the one they started with. */
  setConfig(cfg: Config): void {
    void this.warm(cfg).catch(() => {});
    this.guard.configure(cfg.store);
    this.cfg = cfg;
    this.denyCache.clear();
  }

  async decide(input: CheckInput): Promise<Decision> {
    const arrivedAt = performance.now(); // the overload budget counts from here
    const wait = this.pacer.enter(this.cfg.server.checksPerTurn);
    if (wait) await wait;
    const cfg = this.cfg; // one config for the whole decision, even if a reload lands meanwhile
    const removeHeaders = clientTollgateHeaders(input.headers);
    const route = classifyPath(input.path);
    if (!route) return notLlm(cfg, removeHeaders);
    // identity.unknown_keys: deny — refused before any work is spent on the call
    const gate = unknownKeyGate(cfg, input.headers, keyHeaderOf(route), input.path);
    if (gate && 'denied' in gate) return gate.denied;

    const pool = this.deps.pool;
    const reading = await readBody({ cfg, input, route, pool, encodings: () => this.chains.encodings(cfg) });
    if ('kind' in reading) return reading;

    const id = resolveIdentity(cfg, {
      path: input.path,
      headers: input.headers,
      metadata: input.metadata,
      sourceAddress: input.sourceAddress,
      keyDigest: gate?.digest,
      keyHeader: keyHeaderOf(route),
    });
    const priced = priceCall(cfg, this.chains, reading, route, input.body);
    const { model, costs } = priced;
    // a size estimate (body not read) or a stand-in tokenizer's count (Gemini): x-tollgate-estimated
    const estimated = reading.estimated || reading.countEstimated === true;
    const stats: DecisionStats = {
      model,
      promptTokens: costs[0].promptTokens,
      reservedTokens: costs[0].outputTokens,
      micros: costs[0].micros,
      estimated: estimated || undefined,
      tenantTag: logTag(id.tenant),
      unknownModel: priced.unknownModel || undefined,
      identity: id,
    };
    const queueable =
      this.guard.shared && reading.call && input.body !== undefined ? { body: input.body } : undefined;
    const now = this.deps.clock?.() ?? Date.now();
    const cache = cfg.cache && !estimated && reading.call ? this.deps.cache : undefined;
    const q = cache?.query(cfg.cache!, id, route.dialect, model, input.body, input.headers);
    const ref = q?.fill ? q.ref : undefined;
    const built = planCall(cfg, id, priced, reading, queueable, route.dialect, now, ref);
    const marks: Headers = estimated ? { 'x-tollgate-estimated': 'true' } : {};
    if (built.meta.every((m) => m.length === 0)) {
      stats.chosenModel = model;
      return allow('ok', { ...marks }, { ...marks }, removeHeaders, stats);
    }
    const step =
      cache && q?.serve
        ? new CacheStep({ cfg, cache, q, built, guard: this.guard, arrivedAt, stats, marks })
        : undefined;
    const early = await step?.before(); // serve: always, or a call that may queue
    if (early) return early;

    const stored = await callStore({
      cfg,
      guard: this.guard,
      denyCache: this.denyCache,
      built,
      arrivedAt,
      stats,
      marks,
      removeHeaders,
      onOverloaded: this.deps.onOverloaded,
    });
    if ('decision' in stored) return stored.decision;
    const served = await step?.after(stored.result); // no candidate fits: the cache, then the queue
    if (served) return served;
    const d = answer({ built, costs, stats, marks, removeHeaders, ...stored });
    return priced.refused ? refuseReroute(d, priced.unproven!) : d;
  }

  async close(): Promise<void> {
    await this.guard.close();
  }
}

function clientTollgateHeaders(headers: Record<string, string>): string[] {
  const out: string[] = [];
  for (const k in headers) if (k.startsWith(TOLLGATE_PREFIX)) out.push(k);
  return out;
}

/** server.non_llm_paths: allow, or 403. */
function notLlm(cfg: Config, removeHeaders: string[]): Decision {
  if (cfg.server.nonLlmPaths === 'allow') return allow('not-llm', {}, {}, removeHeaders, {});
  const body = errorBody(
    'This path is not an LLM API path tollgate knows.',
    'invalid_request_error',
    'path_not_allowed',
  );
  return deny('not-llm', 403, {}, body, {});
}
