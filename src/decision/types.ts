/** A Decision is plain data: what to answer. The gRPC and HTTP layers only translate it. */

export type Headers = Record<string, string>;

export type AllowReason = 'ok' | 'rerouted' | 'not-llm' | 'degraded' | 'shadow';
export type DenyReason =
  | 'rate-limited'
  | 'never-fits'
  | 'queued'
  | 'queue-full'
  | 'bad-request'
  | 'not-llm'
  | 'store-unavailable'
  | 'overloaded';

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
}

export interface AllowDecision {
  kind: 'allow';
  reason: AllowReason;
  /** Headers set on the request to upstream (overwrite). */
  upstreamHeaders: Headers;
  /** Headers removed from the request to upstream (client-sent x-tollgate-*). */
  removeHeaders: string[];
  /** Headers added to the client's response (overwrite). */
  responseHeaders: Headers;
  stats: DecisionStats;
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
