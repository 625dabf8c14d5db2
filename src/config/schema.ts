/**
 * The config schema's front door: `validateConfig` (raw YAML → Config or a ConfigError listing every
 * problem) and the helpers others use. The schema itself is in src/config/schema/ (config.ts first).
 */
export { ENCODINGS, fallbackChain } from './schema/models.js';
export { DEFAULT_CHECKS_PER_TURN, DEFAULT_WINDOW } from './schema/server.js';
export { validateConfig } from './schema/validate.js';
