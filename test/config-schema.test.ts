/**
 * tollgate.schema.json (the JSON Schema editors use for tollgate.yaml) is generated from the zod
 * schema by `npm run gen:schema`; this fails when the checked-in file is not current. And the shipped
 * tollgate.yaml points editors at it. The JSON Schema itself accepts the shipped tollgate.yaml and
 * every README example (checked with a small JSON Schema subset: no ajv dependency).
 */
import { readFileSync } from 'node:fs';
import { load as yamlLoad } from 'js-yaml';
import { describe, expect, it } from 'vitest';
import { SCHEMA_FILE, schemaText } from '../scripts/gen-schema.js';
import { jsonSchemaErrors } from './helpers/json-schema-lite.js';

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
      'settle',
      'cache',
    ]);
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties.server.properties.grpc_port).toMatchObject({ default: 9191, maximum: 65535 });
  });

  it('the shipped tollgate.yaml names it on its first line', () => {
    expect(read('tollgate.yaml').split('\n')[0]).toBe(`# yaml-language-server: $schema=./${SCHEMA_FILE}`);
  });
});

describe('the JSON Schema accepts what tollgate accepts', () => {
  const schema = JSON.parse(read(SCHEMA_FILE));
  const examples = [...read('README.md').matchAll(/```yaml\n([\s\S]*?)```/g)]
    .map((m) => m[1])
    .filter((b) => /^(identity|models|limits|queues|tool_weights|mode|server|store):/m.test(b))
    .filter((b) => !/http_filters|^keys:/m.test(b));

  it.each([read('tollgate.yaml'), ...examples].map((t, i) => [i, t]))(
    'example %i (0 = tollgate.yaml)',
    (_i, text) => {
      expect(jsonSchemaErrors(schema, yamlLoad(text as string) ?? {})).toEqual([]);
    },
  );

  it('and rejects what tollgate rejects', () => {
    const bad = { limits: [{ name: 'l', tokens: -5, every: '1q', burst: 5 }], server: { grpc_port: 70000 } };
    expect(jsonSchemaErrors(schema, bad)).toEqual([
      '$.limits[0].tokens: out of range',
      '$.limits[0].every: pattern',
      '$.limits[0].every: not number',
      '$.limits[0].burst: not allowed',
      '$.server.grpc_port: out of range',
    ]);
  });
});
