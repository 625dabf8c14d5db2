/**
 * The validated, normalized configuration every other module reads. Plain data. The section types
 * are inferred from the schema (src/config/schema/); only the assembled `Config` and the key map
 * (filled by load.ts) are written here.
 */
import type { CacheConfig } from './schema/cache.js';
import type { IdentityDim, UnknownKeys } from './schema/identity.js';
import type { LimitConfig } from './schema/limits.js';
import type { ModelConfig } from './schema/models.js';
import type { QueueConfig } from './schema/queues.js';
import type { ServerConfig } from './schema/server.js';
import type { SettleConfig } from './schema/settle.js';
import type { StoreConfig } from './schema/store.js';

export type { CacheConfig } from './schema/cache.js';
export type { IdentityDim, IdentitySource, SourceIpFrom, UnknownKeys } from './schema/identity.js';
export type { CalendarUnit, LimitConfig, LimitKind, LimitWindow } from './schema/limits.js';
export type { ModelConfig } from './schema/models.js';
export type { QueueConfig } from './schema/queues.js';
export type { HttpAuthzListener, ServerConfig } from './schema/server.js';
export type { SettleConfig } from './schema/settle.js';
export type { FailurePolicy, StoreClient, StoreConfig, StoreTopology } from './schema/store.js';

/** API key hash → dimension values, from identity.key_map (a YAML/JSON file). */
export interface KeyMap {
  file: string;
  entries: Map<string, Record<string, string>>;
  /** own: its own id (key_<hash>); shared: one id for every unknown key; deny: 401. */
  unknownKeys: UnknownKeys;
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
  /** The response phase (ext_proc): reservations, upstream errors, the usage export stream. */
  settle: SettleConfig;
  /** The answer cache (docs/cache.md); undefined when off. */
  cache?: CacheConfig;
}
