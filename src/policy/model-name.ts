/**
 * Matching a request's model name to a configured name or alias (pure; shared by the decision's
 * resolver in policy/models.ts and the token workers). Rules: docs/models-and-pricing.md.
 */

/** A snapshot suffix: -2024-08-06, -20241022, -0613, -001, @20240620. Two digits are a version, not a snapshot. */
const SNAPSHOT = /^(.+?)[-@](?:\d{4}-\d{2}-\d{2}|\d{3,})$/;
const MAX_PREFIXES = 3;
/** Snapshot suffixes dropped per name (`-0613-2024-01-01` is two): bounds the work on hostile names. */
const MAX_SNAPSHOT_STRIPS = 2;

/**
 * The lookup key `name` resolves to, given the (lower-case) keys that exist, or undefined (→ "*").
 * Shared with the token workers, which resolve with their own key set.
 */
export function resolveKey(name: string, has: (key: string) => boolean): string | undefined {
  if (has(name)) return name;
  let n = name.toLowerCase();
  for (let prefixes = 0; ; prefixes++) {
    let s: string | undefined = n;
    for (let strips = 0; s !== undefined && strips <= MAX_SNAPSHOT_STRIPS; strips++) {
      if (has(s)) return s;
      s = SNAPSHOT.exec(s)?.[1];
    }
    const slash = n.indexOf('/');
    if (slash < 0 || prefixes >= MAX_PREFIXES) return undefined;
    n = n.slice(slash + 1);
  }
}
