/**
 * The building blocks every config section is made of: zod schemas that carry today's messages
 * ("expected an integer from 1 to 1000", "unknown field (allowed: …)"). The formatter (format.ts) adds
 * the path and ", got <value>"; a field's message says only what was expected.
 */
import { z } from 'zod';
import { parseDuration, parseShare } from '../units.js';

/** Names of limits and queues. */
export const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
/** Identity dimension names (and the key-map fields a key_map source reads). */
export const DIM = /^[a-z][a-z0-9_]{0,31}$/;
export const NAME_TEXT = 'a name of 1-64 letters, digits, "_", "-", "."';

const expected = (what: string) => ({ error: `expected ${what}` });

/** A mapping with exactly these keys (each optional unless its schema is required); others are errors. */
export function mapping<S extends z.ZodRawShape>(shape: S, what = 'a mapping') {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === 'unrecognized_keys' ? `unknown field (allowed: ${allowed})` : `expected ${what}`,
  });
}

export function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  const e = expected(`an integer from ${min} to ${max}`);
  return z.number(e).int(e).min(min, e).max(max, e);
}

export function num(min: number) {
  const e = expected(`a number ≥ ${min}`);
  return z.number(e).min(min, e);
}

export function str(what = 'a string', re?: RegExp) {
  const e = expected(what);
  return re ? z.string(e).regex(re, e) : z.string(e);
}

export function oneOf<const T extends readonly [string, ...string[]]>(options: T) {
  return z.enum(options, expected(`one of ${options.join(', ')}`));
}

export const bool = () => z.boolean(expected('true or false'));

/** "500ms", "30s", "1m", "2h", "1d", "1w", or a plain number of seconds → milliseconds. */
export function duration(example: string) {
  const e = expected(`a duration like ${example}`);
  return z
    .union([z.string(e).regex(/^\s*\d+(\.\d+)?(ms|s|m|h|d|w)\s*$/, e), z.number(e).positive(e)], e)
    .transform((v, ctx) => {
      const ms = parseDuration(v);
      if (ms === undefined) ctx.issues.push({ code: 'custom', message: e.error, input: v });
      return ms ?? 0;
    });
}

/** "20%" or 0.2 → 0.2, strictly between 0 and 1. */
export function share() {
  const e = expected('a share like 20%');
  return z
    .union([z.string(e).regex(/^\s*\d+(\.\d+)?%\s*$/, e), z.number(e).gt(0, e).lt(1, e)], e)
    .transform((v, ctx) => {
      const s = parseShare(v);
      if (s === undefined) ctx.issues.push({ code: 'custom', message: e.error, input: v });
      return s ?? 0;
    });
}

/** A scalar or a list of them → a list (`per: tenant` = `per: [tenant]`). */
export function oneOrMany<T extends z.ZodType<string>>(item: T, what: string) {
  const e = expected(what);
  return z.union([item, z.array(item, e).min(1, e)], e).transform((v) => (Array.isArray(v) ? v : [v]));
}

/** A problem found by a check across fields: the message is complete (no ", got …" is added). */
export function problem(ctx: z.core.$RefinementCtx, path: (string | number)[], message: string): void {
  ctx.addIssue({ code: 'custom', message, path, params: { whole: true } });
}

/** Run a refinement even when sibling fields have problems (it reads presence only). */
export const always = { when: () => true };

/**
 * Run a refinement only when everything below it is valid. (By default zod runs it after problems it
 * may continue past, e.g. a number out of range, when the value below is not yet transformed.)
 */
export const whenValid = { when: (payload: { issues: readonly unknown[] }) => payload.issues.length === 0 };
