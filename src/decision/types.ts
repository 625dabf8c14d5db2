/** A Decision is plain data: what to answer. The gRPC and HTTP layers only translate it. */

export type Headers = Record<string, string>;

/**
 * Bodies of at least this many bytes are moved (not copied) to a token worker when their buffer holds
 * nothing else: the gRPC receive path gives such bodies a buffer of their own.
 */
export { MOVE_MIN_BYTES } from '../offload/pool.js';

/** What the decision needs to know of one request, whichever protocol brought it (gRPC Check or HTTP). */
export interface CheckInput {
  method: string;
  path: string;
  /** Lower-case header names. */
  headers: Record<string, string>;
  /** Raw body bytes (pack_as_bytes) or the body string; undefined when Envoy sent none. */
  body?: Buffer | string;
  /** filter_metadata as plain JSON. */
  metadata?: Record<string, unknown>;
  /** attributes.source.address.socket_address.address: the downstream peer Envoy saw. */
  sourceAddress?: string;
}

export type AllowReason = 'ok' | 'rerouted' | 'not-llm' | 'degraded' | 'shadow';
export type DenyReason =
  | 'rate-limited'
  | 'never-fits'
  | 'queued'
  | 'queue-full'
  | 'bad-request'
  | 'not-llm'
  | 'store-unavailable'
  | 'unknown-key'
  | 'overloaded'
  /** Answered from the answer cache (HTTP 200, src/cache/). */
  | 'cache-hit';

export interface DecisionStats {
  /** Requested model and the one chosen (equal unless rerouted). */
  model?: string;
  chosenModel?: string;
  promptTokens?: number;
  reservedTokens?: number;
  micros?: number;
  /** The binding limit on a deny, or the first shadow-denying limit. */
  limit?: string;
  estimated?: boolean;
  /** Denied from the local deny cache (no Valkey round trip). */
  cached?: boolean;
  /** Queue name and entry id when queued. */
  queue?: string;
  queueId?: string;
  tenantTag?: string;
  /** The requested model matched no configured name or alias: charged as "*". */
  unknownModel?: boolean;
  /** Who called (identity dimension → value): dynamic metadata (metadata.ts), never logged raw. */
  identity?: Readonly<Record<string, string | undefined>>;
}

export interface AllowDecision {
  kind: 'allow';
  reason: AllowReason;
  /** Headers set on the request to upstream (overwrite). */
  upstreamHeaders: Headers;
  /** Headers removed from the request to upstream (client-sent x-tollgate-*). */
  removeHeaders: string[];
  /** Headers added to the client's response, only where the provider sent none of that name (ADD_IF_ABSENT). */
  responseHeaders: Headers;
  stats: DecisionStats;
  /**
   * The reservation to settle after the response (src/settle/): also set as the upstream header
   * x-tollgate-reservation, and returned as dynamic metadata `tollgate_reservation`.
   */
  reservation?: string;
}

export interface DenyDecision {
  kind: 'deny';
  reason: DenyReason;
  /** HTTP status the client sees (429, 400, 403, 503, 202 for queued). */
  httpStatus: number;
  headers: Headers;
  body: string;
  stats: DecisionStats;
}

export type Decision = AllowDecision | DenyDecision;
