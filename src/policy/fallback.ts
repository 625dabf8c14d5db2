/** Fallback chains: which models a call may be rerouted to, in order (policy; the config validator
 * uses it to refuse cycles). */

/**
 * The candidates for a requested model, best first: the model itself, then its fallbacks.
 * A list `fallback: [a, b]` is an explicit chain; a single `fallback: a` continues with a's own fallback.
 */
export function fallbackChain(
  models: Map<string, { fallback: string[] }> | ((name: string) => { fallback: string[] } | undefined),
  name: string,
): string[] | { cycle: string[] } {
  const get = typeof models === 'function' ? models : (n: string) => models.get(n);
  const chain = [name];
  let cur = get(name);
  while (cur && cur.fallback.length > 0) {
    for (const f of cur.fallback) {
      if (chain.includes(f)) return { cycle: [...chain, f] };
      chain.push(f);
    }
    cur = cur.fallback.length === 1 ? get(cur.fallback[0]) : undefined;
  }
  return chain;
}
