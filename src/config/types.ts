/** The validated, normalized configuration every other module reads. Plain data. */
import type { HttpAuthzListener } from './listeners.js';

export type IdentitySource =
  | { header: string }
  | { api_key: true }
  | { metadata: { filter: string; path: string[] } }
  | { path_segment: number }
  | { key_map: string }
  | { default: string }
  /** The client's address: Envoy's attributes.source.address, or the right hop of x-forwarded-for. */
  | { source_ip: SourceIpFrom };

/** Where the client address comes from; IPv6 addresses are grouped by their first `ipv6Prefix` bits. */
export type SourceIpFrom = ({ from: 'envoy' } | { from: 'xff'; trustedHops: number }) & {
  ipv6Prefix: number;
};

/** What an API key missing from the key map becomes (identity.unknown_keys). */
export type UnknownKeys = 'own' | 'shared' | 'deny';

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
  /** own: its own id (key_<hash>); shared: one id for every unknown key; deny: 401. */
  unknownKeys: UnknownKeys;
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
  /** Other names a request may use for this model (matched like names: case-insensitive, snapshots). */
  aliases: string[];
}

export interface QueueConfig {
  name: string;
  /** Entries the stream may hold; a full queue answers 429 (never trimmed). */
  maxLength: number;
  /** Bytes the queued entries may take (bodies + fields + a fixed overhead per entry). */
  maxBytes: number;
  /** Entries / bytes one tenant may hold (queues.<name>.tenant_share of the two above). */
  tenantMaxEntries: number;
  tenantMaxBytes: number;
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
  /** Bind address of the gRPC port (server.grpc_host). */
  grpcHost: string;
  grpcPort: number;
  /** Bind address of the metrics/probe port (server.http_host); undefined = every interface. */
  httpHost?: string;
  /** The metrics/probe port: /metrics, /healthz, /readyz only. */
  httpPort: number;
  /** The HTTP authorization mode's own listener (server.http_authz); undefined = off. */
  httpAuthz?: HttpAuthzListener;
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
   * server.partial_body: a body tollgate cannot read in full (partial, missing, too large) is charged
   * as the costliest configured model (`costliest`) or refused with 413 (`deny`).
   */
  partialBody: 'costliest' | 'deny';
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
  /** Valkey client: tollgate's own RESP connection (default) or iovalkey. Restart to change. */
  client: StoreClient;
  /** In-memory store (and on_store_failure: local): most limit keys held at once (store.memory_max_keys). */
  memoryMaxKeys: number;
  /** Store calls in flight per process; more wait unsent (docs/overload.md). */
  maxInflight: number;
}

export type StoreClient = 'resp' | 'iovalkey';

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
