/**
 * `cache`: the answer cache, the degrade path's third tier (docs/cache.md). Off unless configured.
 * Answers are filled by the response phase (settle) and served by the Check when every model
 * candidate is out of budget (`serve: when_exhausted`), or before the store call (`serve: always`).
 */
import { z } from 'zod';
import { DIM, duration, int, mapping, num, oneOf, share, str } from './fields.js';

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};
const SIZE = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)\s*$/i;

/** 262144, "256kb", "256KiB", "512mb", "1gb" → bytes (1 kb = 1024 bytes); undefined otherwise. */
export function parseCacheBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = SIZE.exec(v);
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * UNITS[m[2].toLowerCase()]);
  return n > 0 ? n : undefined;
}

function size(min: number) {
  const e = { error: `expected a size of at least ${min} bytes, like 262144, "256kb" or "512mb"` };
  return z.union([z.number(e).int(e).min(min, e), z.string(e).regex(SIZE, e)], e).transform((v, ctx) => {
    const n = parseCacheBytes(v);
    if (n === undefined || n < min) ctx.issues.push({ code: 'custom', message: e.error, input: v });
    return n ?? 0;
  });
}

const scope = z.union(
  [
    z.enum(['tenant', 'global']),
    z
      .array(str('an identity dimension name', DIM), { error: 'expected a list of identity dimensions' })
      .min(1),
  ],
  { error: 'expected tenant, global, or a list of identity dimensions' },
);

export const DEFAULT_CACHE_TTL_MS = 3_600_000;

export const cacheSchema = mapping({
  /** when_exhausted: served only when no candidate fits (before the queue); always: looked up first. */
  serve: oneOf(['when_exhausted', 'always']).default('when_exhausted'),
  /** Who shares answers: one tenant, everyone, or callers equal on these identity dimensions. */
  scope: scope.default('tenant'),
  ttl: duration('1h').prefault('1h'),
  max_entry_bytes: size(256).default(256 * 1024),
  /** All entries together (per process in memory, per Valkey when shared). */
  max_bytes: size(4096).default(512 * 1024 * 1024),
  /** The share of max_bytes one scope may hold (its oldest entries are evicted first). */
  scope_share: share().optional(),
  /** none: a hit debits nothing; requests: it counts against request limits (only). */
  charge: oneOf(['none', 'requests']).default('none'),
  semantic: mapping({
    embeddings: mapping({
      url: str('an http(s) URL', /^https?:\/\//),
      model: str('a model name'),
      api_key_env: str('an environment variable name', /^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
      timeout: duration('300ms').prefault('300ms'),
    }),
    /** Cosine similarity of the last user turn at or above which an answer is served. */
    threshold: num(0).max(1, { error: 'expected a number from 0 to 1' }).default(0.95),
    /** Vectors read per LSH bucket (the newest): a lookup reads at most 9 buckets (docs/cache.md). */
    max_candidates: int(1, 100_000).default(100),
  }).optional(),
})
  .optional()
  .transform((c) =>
    c === undefined
      ? undefined
      : {
          serve: c.serve,
          scope: c.scope === 'tenant' ? ['tenant'] : c.scope === 'global' ? [] : c.scope,
          ttlMs: c.ttl,
          maxEntryBytes: c.max_entry_bytes,
          maxBytes: c.max_bytes,
          scopeMaxBytes: Math.floor(c.max_bytes * (c.scope_share ?? 1)),
          charge: c.charge,
          semantic: c.semantic && {
            url: c.semantic.embeddings.url,
            model: c.semantic.embeddings.model,
            apiKeyEnv: c.semantic.embeddings.api_key_env,
            timeoutMs: c.semantic.embeddings.timeout,
            threshold: c.semantic.threshold,
            maxCandidates: c.semantic.max_candidates,
          },
        },
  );

export type CacheConfig = NonNullable<z.output<typeof cacheSchema>>;
