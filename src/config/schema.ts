/**
 * The config schema's front door: `validateConfig` (raw YAML → Config or a ConfigError listing every
 * problem) and the helpers others use. The schema itself is in src/config/schema/ (config.ts first).
 */

export { DEFAULT_IPV6_PREFIX } from './schema/identity.js';
export { ENCODINGS, fallbackChain } from './schema/models.js';
export {
  DEFAULT_QUEUE_MAX_BYTES,
  DEFAULT_QUEUE_MAX_LENGTH,
  DEFAULT_TENANT_SHARE,
  parseBytes,
} from './schema/queues.js';
export { AUTHZ_DEFAULT_HOST, DEFAULT_CHECKS_PER_TURN, DEFAULT_WINDOW } from './schema/server.js';
export { DEFAULT_MEMORY_MAX_KEYS, DEFAULT_MEMORY_MAX_RECORDS } from './schema/store.js';
export { validateConfig } from './schema/validate.js';
