/**
 * Writes tollgate.schema.json, the JSON Schema of tollgate.yaml, from the zod schema
 * (src/config/schema/config.ts) as its input side: what a file may say, with defaults, before
 * normalizing. Editors use it through the first line of tollgate.yaml
 * (`# yaml-language-server: $schema=./tollgate.schema.json`); test/config-schema.test.ts fails when
 * the checked-in file is not current.
 *
 *   npm run gen:schema     (compiles, then runs dist/scripts/gen-schema.js)
 */
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../src/config/schema/config.js';

export const SCHEMA_FILE = 'tollgate.schema.json';

/** The JSON Schema text, as checked in. */
export function schemaText(): string {
  const schema = z.toJSONSchema(configSchema, { io: 'input', target: 'draft-2020-12' });
  const doc = {
    $schema: schema.$schema,
    title: 'tollgate configuration (tollgate.yaml)',
    description: 'Generated from src/config/schema/ by `npm run gen:schema`; do not edit.',
    ...schema,
  };
  return `${JSON.stringify(doc, null, 2)}\n`;
}

if (process.argv[1]?.endsWith('gen-schema.js')) {
  const out = new URL(`../../${SCHEMA_FILE}`, import.meta.url);
  writeFileSync(out, schemaText());
  process.stdout.write(`wrote ${SCHEMA_FILE}\n`);
}
