/**
 * Just enough of JSON Schema (2020-12) to check documents against tollgate.schema.json without a
 * dependency: type, const, enum, pattern, minimum/maximum (exclusive too), properties, required,
 * additionalProperties, propertyNames, min/maxProperties, items, minItems, anyOf. Returns the paths
 * that fail; an unknown keyword fails loudly so the subset cannot silently pass.
 */
type Schema = Record<string, any>;

const KNOWN = new Set([
  '$schema',
  'title',
  'description',
  'default',
  'type',
  'const',
  'enum',
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'properties',
  'required',
  'additionalProperties',
  'propertyNames',
  'minProperties',
  'maxProperties',
  'items',
  'minItems',
  'anyOf',
]);

function typeOk(type: string, v: unknown): boolean {
  if (type === 'integer') return Number.isInteger(v);
  if (type === 'number') return typeof v === 'number' && Number.isFinite(v);
  if (type === 'null') return v === null;
  if (type === 'array') return Array.isArray(v);
  if (type === 'object') return typeof v === 'object' && v !== null && !Array.isArray(v);
  return typeof v === type;
}

export function jsonSchemaErrors(s: Schema, v: unknown, path = '$'): string[] {
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`${path}: unsupported keyword ${k}`);
  const fail = (why: string) => [`${path}: ${why}`];
  if (s.anyOf) {
    const each = s.anyOf.map((o: Schema) => jsonSchemaErrors(o, v, path));
    if (!each.some((e: string[]) => e.length === 0)) return each.flat();
  }
  const types: string[] | undefined = s.type && [s.type].flat();
  if (types && !types.some((t) => typeOk(t, v))) return fail(`not ${types.join(' or ')}`);
  if ('const' in s && v !== s.const) return fail(`not ${s.const}`);
  if (s.enum && !s.enum.includes(v)) return fail(`not one of ${s.enum}`);
  if (typeof v === 'string' && s.pattern && !new RegExp(s.pattern, 'u').test(v)) return fail('pattern');
  if (typeof v === 'number') {
    if ((s.minimum !== undefined && v < s.minimum) || (s.maximum !== undefined && v > s.maximum))
      return fail('out of range');
    if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) return fail('out of range');
    if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) return fail('out of range');
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) return fail('too few items');
    if (s.items) return v.flatMap((x, i) => jsonSchemaErrors(s.items, x, `${path}[${i}]`));
  }
  if (typeOk('object', v)) return objectErrors(s, v as Record<string, unknown>, path);
  return [];
}

function objectErrors(s: Schema, o: Record<string, unknown>, path: string): string[] {
  const keys = Object.keys(o);
  const out: string[] = [];
  if (s.minProperties !== undefined && keys.length < s.minProperties) out.push(`${path}: too few keys`);
  if (s.maxProperties !== undefined && keys.length > s.maxProperties) out.push(`${path}: too many keys`);
  for (const r of s.required ?? []) if (!(r in o)) out.push(`${path}.${r}: required`);
  for (const k of keys) {
    const p = `${path}.${k}`;
    if (s.propertyNames) out.push(...jsonSchemaErrors(s.propertyNames, k, `${p} (name)`));
    const sub = s.properties?.[k] ?? s.additionalProperties;
    if (sub === false) out.push(`${p}: not allowed`);
    else if (sub && sub !== true) out.push(...jsonSchemaErrors(sub, o[k], p));
  }
  return out;
}
