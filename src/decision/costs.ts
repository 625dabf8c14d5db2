/**
 * Candidates and costs: the configured model a call means, its fallback chain (the candidates, unless
 * the call is unproven), each candidate's tokens and price, and the plan for the one store call
 * (with the queue tier's part when the call may queue).
 */

import type { Config } from '../config/types.js';
import { modelKeyProblem } from '../dialects/model-key.js';
import type { Route } from '../dialects/route.js';
import type { Identity } from '../identity/identity.js';
import type { EncodingPlan } from '../offload/worker.js';
import { fallbackChain } from '../policy/fallback.js';
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
import { type CacheRef, reservationRecords } from '../policy/settle.js';
import { keyNames, reservationKey } from '../store/keys.js';
import { countPromptTokens } from '../tokens/count.js';
import type { BodyReading } from './body.js';
import { queueKeys, queueRequest } from './queue-tier.js';
import { newReservationId } from './reservation.js';
import type { Unproven } from './unproven.js';

/** Fallback chains and token-worker encodings of configured models, computed once per config. */
export class ModelChains {
  private chains = new Map<string, string[]>();
  private chainsFor?: Config;
  private encodingPlan?: EncodingPlan;
  private encodingPlanFor?: Config;

  candidates(cfg: Config, model: string): string[] {
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

  /** For token workers: the encodings each model's fallback chain needs. */
  encodings(cfg: Config): EncodingPlan {
    if (this.encodingPlanFor !== cfg || !this.encodingPlan) {
      const byModel: Record<string, string[]> = Object.create(null);
      for (const [key, name] of modelResolver(cfg).keys)
        byModel[key] = [...new Set(this.candidates(cfg, name).map((n) => modelConfig(cfg, n).encoding))];
      this.encodingPlan = { byModel, other: [cfg.defaultModel.encoding] };
      this.encodingPlanFor = cfg;
    }
    return this.encodingPlan;
  }
}

export interface Priced {
  /** The configured model the call means (or its own name when it matches none). */
  model: string;
  /** One per candidate, the requested model first. */
  costs: CandidateCost[];
  /** The requested model matched no configured name or alias: charged as "*". */
  unknownModel: boolean;
  /** Its fallbacks were not tried, because of `unproven`. */
  refused: boolean;
  unproven?: Unproven;
}

/** The candidates of a call and what each would cost. */
export function priceCall(
  cfg: Config,
  chains: ModelChains,
  reading: BodyReading,
  route: Route,
  body: string | Buffer | undefined,
): Priced {
  const { call, estimated, counted } = reading;
  let { model, unproven } = reading;
  // The configured model the request means (case, snapshots, provider prefixes, aliases), unless it
  // was chosen here as the costliest; a name that matches none is charged as "*" and counted.
  let unknownModel = false;
  if (!estimated || route.pathModel !== undefined) {
    const resolved = modelResolver(cfg).resolve(model);
    if (resolved === undefined) unknownModel = true;
    else model = resolved;
  }
  let names = chains.candidates(cfg, model);
  let refused = false;
  if (names.length > 1) {
    // A reroute makes Envoy rewrite the body's model: only for a body whose model key is unambiguous,
    // never for a model named by the path (Azure, Gemini), which the rewrite cannot change.
    // (a token worker already checked the bytes it parsed: they may have been moved there)
    if (!unproven && route.pathModel !== undefined) unproven = 'path-model';
    if (!unproven && call) unproven = counted ? call.modelKey : modelKeyProblem(body!);
    if (unproven) {
      names = names.slice(0, 1);
      refused = true;
    }
  }
  return { model, costs: costsOf(cfg, names, reading), unknownModel, refused, unproven };
}

function costsOf(cfg: Config, names: string[], reading: BodyReading): CandidateCost[] {
  const { call, counted } = reading;
  const tokensByEncoding = new Map<string, number>();
  return names.map((name) => {
    const mc = modelConfig(cfg, name);
    let prompt = reading.estimatedPrompt;
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
    return {
      model: name,
      config: mc,
      promptTokens: prompt,
      outputTokens: output,
      micros: priceMicros(mc, prompt, output),
    };
  });
}

/**
 * The plan for the store call. With `queueable` (a shared store, a parsed call with its body) and a
 * queue configured for the model or a matching limit: if no candidate fits, the script appends the
 * call to that stream in the same step, bounded in entries and bytes, per queue and per tenant
 * (queue-tier.ts). `now`: the wall clock the plan is made at (calendar windows, reservation ids).
 */
export function planCall(
  cfg: Config,
  id: Identity,
  priced: Priced,
  reading: BodyReading,
  queueable: { body: string | Buffer } | undefined,
  dialect: string,
  now = Date.now(),
  cache?: CacheRef,
): BuiltPlan {
  const { costs } = priced;
  const built = buildPlan(cfg, id, costs, keyNames, now, requestWeight(cfg, reading.call?.tools));
  if (cfg.settle.enabled && built.meta.some((m) => m.length > 0)) {
    // recorded with the debit, for the response phase to settle (src/settle/); before any queue keys
    const rid = newReservationId(now);
    const key = built.plan.keys.push(reservationKey(cfg.store.prefix, rid)) - 1;
    const records = reservationRecords(cfg, id, costs, built.meta, dialect, reading.estimated, now, cache);
    built.plan.reservation = { key, id: rid, ttlMs: cfg.settle.reservationTtlMs, records };
  }
  const queueName =
    costs[0].config.queue ??
    cfg.limits.find((l) => l.queue && built.meta[0].some((m) => m.limit === l))?.queue;
  if (queueName && queueable) {
    const q = cfg.queues.get(queueName)!;
    built.plan.keys.push(...queueKeys(cfg, q));
    const cost = costs[0].promptTokens + costs[0].outputTokens;
    built.plan.queue = queueRequest(q, id.tenant ?? 'anonymous', priced.model, cost, queueable.body);
  }
  return built;
}
