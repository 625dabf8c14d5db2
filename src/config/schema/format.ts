/**
 * zod issues → tollgate's problem lines: `<path>: expected <what>, got <value>`, one line per unknown
 * field, `models["name"]` for model keys. The ConfigError format is unchanged.
 */
import type { z } from 'zod';

export type Path = readonly PropertyKey[];

/** `limits[0].per[1]`, `models["gpt-4o"].fallback`, `identity.tenant[0].header`; the empty path is "(root)". */
export function formatPath(path: Path): string {
  let out = '';
  path.forEach((k, i) => {
    if (typeof k === 'number') out += `[${k}]`;
    else if (i === 1 && path[0] === 'models') out += `["${String(k)}"]`;
    else out += out ? `.${String(k)}` : String(k);
  });
  return out || '(root)';
}

/** How a value is shown after "got": JSON for scalars (cut at 60 chars), "a list", "a mapping". */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * A union whose options are a value and a mapping or list (`source_ip: envoy | {…}`, `http_authz:
 * false | {…}`, a dimension's list or `{ sources, … }`): when only one option has the input's type,
 * its own problems (`server.http_authz.port: …`) say more than the union's "expected …, got a
 * mapping". Only problems in tollgate's words are shown this way (not zod's default messages).
 */
function chosenOption(iss: z.core.$ZodIssueInvalidUnion): z.core.$ZodIssue[] | undefined {
  const input = iss.input;
  if (!input || typeof input !== 'object') return undefined;
  const wrongType = (o: z.core.$ZodIssue[]) =>
    o.length === 1 &&
    o[0].path.length === 0 &&
    (o[0].code === 'invalid_type' || o[0].code === 'invalid_value');
  const options = iss.errors.filter((o) => !wrongType(o));
  if (options.length !== 1) return undefined;
  return options[0].every((i) => !/^(Invalid|Too |Unrecognized)/.test(i.message)) ? options[0] : undefined;
}

/** One line per problem, in the order zod found them, without repeats. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix: Path = []): string[] {
  const lines: string[] = [];
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === 'unrecognized_keys') {
      // "unknown field (allowed: …)", or "expected <the allowed keys>, got "<key>""
      const got = (k: string) => (iss.message.startsWith('expected') ? `, got ${describe(k)}` : '');
      for (const k of iss.keys) lines.push(`${formatPath([...path, k])}: ${iss.message}${got(k)}`);
      continue;
    }
    const chosen = iss.code === 'invalid_union' ? chosenOption(iss) : undefined;
    if (chosen) {
      lines.push(...formatIssues(chosen, path));
      continue;
    }
    const whole = (iss as { params?: { whole?: boolean } }).params?.whole;
    const got = !whole && iss.input !== undefined && iss.message.startsWith('expected');
    lines.push(`${formatPath(path)}: ${iss.message}${got ? `, got ${describe(iss.input)}` : ''}`);
  }
  return [...new Set(lines)];
}
