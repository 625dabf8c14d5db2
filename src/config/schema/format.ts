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

/** One line per problem, in the order zod found them, without repeats. */
export function formatIssues(issues: readonly z.core.$ZodIssue[], prefix: Path = []): string[] {
  const lines: string[] = [];
  for (const iss of issues) {
    const path = [...prefix, ...iss.path];
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) lines.push(`${formatPath([...path, k])}: ${iss.message}`);
      continue;
    }
    const whole = (iss as { params?: { whole?: boolean } }).params?.whole;
    const got = !whole && iss.input !== undefined && iss.message.startsWith('expected');
    lines.push(`${formatPath(path)}: ${iss.message}${got ? `, got ${describe(iss.input)}` : ''}`);
  }
  return [...new Set(lines)];
}
