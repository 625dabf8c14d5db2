/**
 * Reading the body: parse it (here or in a token worker) and name its model, or — for a partial,
 * missing or oversized body — estimate its prompt from the size and charge the costliest model it
 * could be (unproven.ts).
 */
import type { Config } from '../config/types.js';
import { parseBody } from '../dialects/body.js';
import type { Route } from '../dialects/route.js';
import { type Dialect, isParseError, type ParsedCall } from '../dialects/types.js';
import type { TokenPool } from '../offload/pool.js';
import type { EncodingPlan } from '../offload/worker.js';
import { badRequest } from './answer.js';
import type { CheckInput, DenyDecision } from './types.js';
import { costliestModel, partialRefused, type Unproven } from './unproven.js';

/**
 * Bodies of at least this many bytes are parsed and counted in a token worker. Below it, parsing and
 * counting here (~2 µs per 100 bytes) costs less than a worker round trip under load.
 */
export const OFFLOAD_BYTES = 32 * 1024;

/** What the body says about the call. */
export interface BodyReading {
  /** The parsed call; undefined when the body was not read (estimated). */
  call?: ParsedCall;
  /** The model named (not yet resolved against the config), or the costliest one when estimated. */
  model: string;
  /** Prompt tokens estimated from the size (when `estimated`). */
  estimatedPrompt: number;
  estimated: boolean;
  /**
   * The body was read, but its prompt was counted with a tokenizer that is not the provider's (Gemini:
   * Google's is not public, so the model's configured encoding stands in): also marked
   * `x-tollgate-estimated: true`. Unlike `estimated`, the model named is the one charged.
   */
  countEstimated?: boolean;
  /** Prompt tokens by encoding, when a worker counted them (the call then carries no texts). */
  counted?: Record<string, number>;
  /** Why this call's model cannot be trusted (then it is never rerouted). */
  unproven?: Unproven;
}

export interface BodyContext {
  cfg: Config;
  input: CheckInput;
  route: Route;
  pool?: TokenPool;
  /** The encodings each model's fallback chain needs (for token workers). */
  encodings: () => EncodingPlan;
}

/** The body's call and model, or the answer refusing it (400, 413). */
export async function readBody(ctx: BodyContext): Promise<BodyReading | DenyDecision> {
  const { cfg, input } = ctx;
  const body = input.body;
  const len = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  const declared = Number(input.headers['content-length']);
  // Partial (Envoy stopped buffering), missing, or larger than we parse: estimate from the size.
  const partial =
    input.headers['x-envoy-auth-partial-body'] === 'true' ||
    (Number.isFinite(declared) && declared > len) ||
    len === 0 ||
    len > cfg.server.maxBodyBytes;
  if (partial) {
    // A prefix cannot prove the top-level model (the last duplicate key wins): charge the costliest
    // model the call could be, unless the path names it (Azure, Gemini), or refuse (partial_body: deny).
    const bytes = Math.max(Number.isFinite(declared) && declared > 0 ? declared : 0, len);
    if (cfg.server.partialBody === 'deny' && ctx.route.pathModel === undefined)
      return partialRefused(bytes === 0);
    return estimate(cfg, ctx.route, bytes);
  }
  if (ctx.pool?.mode === 'workers' && len >= OFFLOAD_BYTES) {
    const r = await readInWorker(ctx, ctx.pool, len);
    if (r) return r;
  }
  const parsed = parseBody(ctx.route.dialect, body!, ctx.route);
  if (isParseError(parsed)) return badRequest(parsed.error);
  return named(parsed);
}

/** Dialects whose prompt is counted with a stand-in tokenizer: Gemini (gemini.ts). */
const STAND_IN_TOKENIZER: ReadonlySet<Dialect> = new Set<Dialect>(['gemini.generateContent']);

function named(call: ParsedCall, counted?: Record<string, number>): BodyReading | DenyDecision {
  if (call.model === undefined) return badRequest('model is required');
  const reading: BodyReading = { call, model: call.model, estimatedPrompt: 0, estimated: false, counted };
  if (STAND_IN_TOKENIZER.has(call.dialect)) reading.countEstimated = true;
  return reading;
}

/** A body not read: its prompt estimated from `bytes`, charged as the costliest model it could be. */
function estimate(cfg: Config, route: Route, bytes: number): BodyReading {
  const estimatedPrompt = Math.ceil(bytes / cfg.server.bytesPerToken);
  const model = route.pathModel ?? costliestModel(cfg, estimatedPrompt);
  return { model, estimatedPrompt, estimated: true, unproven: 'partial-body' };
}

/**
 * Large body: parsed and counted in a token worker, so the event loop never parses it or holds its
 * strings. If the worker fails, it is parsed and counted here instead (undefined), unless the pool
 * moved the bytes to the worker (then they are gone: estimated from the size, like a partial body, and
 * priced as the costliest configured model, so a crash never undercharges). Not with a queue tier
 * configured: a queued call keeps its body for the stream.
 */
async function readInWorker(
  ctx: BodyContext,
  pool: TokenPool,
  len: number,
): Promise<BodyReading | DenyDecision | undefined> {
  const { cfg, route } = ctx;
  const body = ctx.input.body!;
  const r = await pool
    .parseAndCount(
      route.dialect,
      body,
      { pathModel: route.pathModel, stream: route.stream },
      ctx.encodings(),
      { imageTokens: cfg.server.imageTokens },
      cfg.queues.size === 0 && !cfg.cache, // the cache keys calls by their body
    )
    .catch(() => undefined);
  if (r && 'error' in r) return badRequest(r.error);
  if (r) return named(r.call, r.tokens);
  if (typeof body !== 'string' && body.byteLength === 0) return estimate(cfg, route, len);
  return undefined;
}
