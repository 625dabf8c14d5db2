/**
 * Which configured model a request's model name means (docs/models-and-pricing.md, "Matching"):
 *  1. the exact configured name;
 *  2. a configured name or alias, ignoring case;
 *  3. a dated or versioned snapshot of one (`<name>-YYYY-MM-DD`, `<name>-<3+ digits>`, `<name>@<digits>`):
 *     the longest configured name it extends;
 *  4. the same after dropping up to MAX_PREFIXES provider prefixes (`openai/gpt-4o`,
 *     `openrouter/anthropic/claude-…`), unless the prefixed name itself is configured.
 * Anything else falls through to "*". Names are resolved once per distinct string (bounded cache per
 * config), never by scanning the models on each call. Pure: no I/O.
 */
import type { Config } from '../config/types.js';
import { resolveKey } from './model-name.js';

export { resolveKey };

const CACHE_MAX = 4096;

export class ModelResolver {
  /** Lower-case configured name or alias → configured name. */
  readonly keys = new Map<string, string>();
  private cache = new Map<string, string | null>();

  constructor(private readonly cfg: Config) {
    for (const [name, m] of cfg.models) {
      this.keys.set(name.toLowerCase(), name);
      for (const a of m.aliases) this.keys.set(a.toLowerCase(), name);
    }
  }

  /** The configured model `raw` names, or undefined when it falls through to "*". */
  resolve(raw: string): string | undefined {
    if (this.cfg.models.has(raw)) return raw;
    let r = this.cache.get(raw);
    if (r === undefined) {
      const k = resolveKey(raw, (x) => this.keys.has(x));
      r = k === undefined ? null : this.keys.get(k)!;
      if (this.cache.size >= CACHE_MAX) this.cache = new Map();
      this.cache.set(raw, r);
    }
    return r ?? undefined;
  }
}

const resolvers = new WeakMap<Config, ModelResolver>();

/** The resolver of a config (built once per config). */
export function modelResolver(cfg: Config): ModelResolver {
  let r = resolvers.get(cfg);
  if (!r) {
    r = new ModelResolver(cfg);
    resolvers.set(cfg, r);
  }
  return r;
}
