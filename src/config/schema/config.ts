/**
 * The tollgate.yaml schema, one zod 4 schema per section (identity.ts, models.ts, limits.ts,
 * queues.ts, server.ts, store.ts).
 *
 * Why zod 4 and not TypeBox + ajv: the normalized types (Maps, micro-dollars, milliseconds) are
 * inferred from the same schema through its transforms, so there is no second copy of the types or
 * the defaults; every field and check takes its own message, which keeps tollgate's "<path>: expected
 * …, got …" lines; and `z.toJSONSchema` (scripts/gen-schema.mjs → tollgate.schema.json) gives editors
 * the same schema, all without a second dependency or a compile step for validators.
 *
 * Adding a key: add it to its section's `mapping({...})` with its check and `.default()` (the message
 * comes with the field builder), then map it to the normalized name in the section's `.transform`
 * (the type follows), then `npm run gen:schema`.
 */
import { z } from 'zod';
import { cacheSchema } from './cache.js';
import { identitySchema } from './identity.js';
import { limitsSchema } from './limits.js';
import { modelsSchema } from './models.js';
import { modeSchema, queuesSchema, toolWeightsSchema } from './queues.js';
import { serverSchema } from './server.js';
import { settleSchema } from './settle.js';
import { storeSchema } from './store.js';

/** The sections, in the order their problems are reported. Each is parsed on its own (see validate.ts). */
export const sections = {
  identity: identitySchema.prefault({}),
  models: modelsSchema.prefault({}),
  limits: limitsSchema.prefault([]),
  queues: queuesSchema.prefault({}),
  tool_weights: toolWeightsSchema.prefault({}),
  mode: modeSchema,
  server: serverSchema.prefault({}),
  store: storeSchema.prefault({}),
  settle: settleSchema.prefault({}),
  cache: cacheSchema,
};

/** The whole file: what tollgate.schema.json describes (`z.toJSONSchema(configSchema, { io: 'input' })`). */
export const configSchema = z.strictObject(sections);

export type Sections = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
