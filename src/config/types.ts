/** The validated, normalized configuration every other module reads. Plain data. */

export type IdentitySource =
  | { header: string }
  | { api_key: true }
  | { metadata: { filter: string; path: string[] } }
  | { path_segment: number }
  | { key_map: string }
  | { default: string };

export interface IdentityDim {
  sources: IdentitySource[];
  /** Known values; anything else becomes `fallback` (e.g. an unknown plan → the default plan). */
  values?: Set<string>;
  fallback?: string;
}

/** API key hash → dimension values, from identity.key_map (a YAML/JSON file). */
export interface KeyMap {
  file: string;
  entries: Map<string, Record<string, string>>;
}

export interface ModelConfig {
  name: string;
  encoding: string;
  /** micro-dollars per 1M tokens = USD per 1M tokens × 1e6, integer (exact pricing in integer math). */
  priceInPer1M: number;
  priceOutPer1M: number;
  defaultMaxOutputTokens: number;
  /** Ordered fallback chain after this model (not including itself). */
  fallback: string[];
  /** Multiplier for this model's tokens on token limits (premium models count more). */
  tokenWeight: number;
  /** when_exhausted: queue — calls to this model that fit no limit go to this queue. */
  queue?: string;
}

export interface QueueConfig {
  name: string;
  /** Entries the stream may hold; a full queue answers 429 (never trimmed). */
  maxLength: number;
}

export type LimitKind = 'requests' | 'tokens' | 'usd';
export type CalendarUnit = 'hourly' | 'daily' | 'weekly' | 'monthly';

export type LimitWindow =
  | { type: 'rolling'; ms: number }
  | { type: 'calendar'; unit: CalendarUnit; timezone?: string };

export interface LimitConfig {
  name: string;
  /** Identity dimensions (and/or "model") that make up the limit's key. Empty = one global limit. */
  per: string[];
  /** Models the limit applies to; undefined = every model. */
  models?: string[];
  kind: LimitKind;
  /** Capacity in integer units: requests, tokens, or micro-dollars. */
  amount: number;
  window: LimitWindow;
  shadow: boolean;
  /** Share of the limit (0..1) below which calls with a fallback are routed to it. */
  downgradeBelow?: number;
  /** Apply only when each named dimension has the given value. */
  when?: Record<string, string>;
  /** when_exhausted: queue — the queue a call blocked by this limit goes to. */
  queue?: string;
  /** requests limits: count each call as its tool weight (count: weighted) instead of 1. */
  weighted: boolean;
}

export type FailurePolicy = 'allow' | 'deny' | 'local';

export interface ServerConfig {
  grpcHost: string;
  grpcPort: number;
  httpPort: number;
  /** Largest request body we accept (bytes); the gRPC receive limit is set above it. */
  maxBodyBytes: number;
  /** The whole decision answers within this many ms, even when the store hangs. */
  decisionDeadlineMs: number;
  /** What to do with requests whose path is not an LLM API. */
  nonLlmPaths: 'allow' | 'deny';
  /** Bytes per token used to estimate cost when the body is missing or partial. */
  bytesPerToken: number;
  /** Flat token estimate per image part. */
  imageTokens: number;
  /** Fallback default for max output tokens when neither request nor model config gives one. */
  defaultMaxOutputTokens: number;
  /**
   * HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per gRPC connection: checks a client may have open on one
   * connection. Bounds the requests (and bodies) buffered here when checks arrive faster than they
   * are decided; the rest wait in the client.
   */
  maxConcurrentStreams: number;
  /**
   * At most this many decisions start per event-loop turn; later checks of a burst wait for the next
   * turns, so the answers decided so far go out meanwhile (src/decision/pacer.ts). 0 = no pacing.
   */
  checksPerTurn: number;
  /** server.grpc_direct_check: Check answered straight from HTTP/2, not through grpc-js's call layer. */
  grpcDirectCheck: boolean;
  /** HTTP/2 initial stream window advertised to gRPC clients (bytes; Node's default 65535). */
  http2StreamWindow: number;
  /** HTTP/2 connection window (bytes; Node's default 65535). */
  http2ConnectionWindow: number;
  /**
   * Longest a check waits for a store that is answering (our own backlog), from its arrival; then it is
   * shed with a retryable 503 `overloaded` (docs/overload.md). Keep below Envoy's ext_authz timeout.
   */
  overloadBudgetMs: number;
  /** Request bytes buffered at once across all direct-path gRPC streams; past it new streams are refused. */
  maxBufferedBytes: number;
}

export interface StoreConfig {
  prefix: string;
  timeoutMs: number;
  breakerFailures: number;
  breakerOpenMs: number;
  onStoreFailure: FailurePolicy;
  /** Replica count used by on_store_failure: local (each pod enforces limit / replicas). */
  replicas: number;
  /** Answer repeat denies from a local "denied until T" cache (T from the script). */
  denyCache: boolean;
  /** Store calls in flight per process; more wait unsent (docs/overload.md). */
  maxInflight: number;
}

export interface Config {
  identity: Record<string, IdentityDim>;
  keyMap?: KeyMap;
  /** Tool name → request weight ("*" = any other tool; default 1). */
  toolWeights: Map<string, number>;
  /** Secret for keyed hashing of API keys (HMAC-SHA256); empty = plain SHA-256. */
  apiKeySecret: string;
  models: Map<string, ModelConfig>;
  /** The "*" entry: used for any model not listed. */
  defaultModel: ModelConfig;
  limits: LimitConfig[];
  queues: Map<string, QueueConfig>;
  mode: 'enforce' | 'shadow';
  server: ServerConfig;
  store: StoreConfig;
}
