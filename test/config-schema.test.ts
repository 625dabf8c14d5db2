/**
 * tollgate.schema.json (the JSON Schema editors use for tollgate.yaml) is generated from the zod
 * schema by `npm run gen:schema`; this fails when the checked-in file is not current. And the shipped
 * tollgate.yaml points editors at it.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SCHEMA_FILE, schemaText } from '../scripts/gen-schema.js';

const read = (f: string) => readFileSync(new URL(`../${f}`, import.meta.url), 'utf8');

describe('tollgate.schema.json', () => {
  it('is current (run `npm run gen:schema` after changing src/config/schema/)', () => {
    expect(read(SCHEMA_FILE)).toBe(schemaText());
  });

  it('describes every top-level key, strictly', () => {
    const schema = JSON.parse(read(SCHEMA_FILE));
    expect(Object.keys(schema.properties)).toEqual([
      'identity',
      'models',
      'limits',
      'queues',
      'tool_weights',
      'mode',
      'server',
      'store',
    ]);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.server.properties.grpc_port).toMatchObject({ default: 9191, maximum: 65535 });
  });

  it('the shipped tollgate.yaml names it on its first line', () => {
    expect(read('tollgate.yaml').split('\n')[0]).toBe(`# yaml-language-server: $schema=./${SCHEMA_FILE}`);
  });
});
