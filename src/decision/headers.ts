/** Rate-limit response headers: X-RateLimit-*, OpenAI's x-ratelimit-*-{requests,tokens}, Retry-After. */
import type { PlanMeta } from '../policy/plan.js';
import type { EntryResult } from '../store/types.js';
import type { Headers } from './types.js';

/** OpenAI's duration format for x-ratelimit-reset-*: "1s", "6m0s", "1h2m3s", "20ms". */
export function openAiDuration(ms: number): string {
  if (ms <= 0) return '0s';
  if (ms < 1000) return `${Math.ceil(ms)}ms`;
  let s = Math.ceil(ms / 1000);
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

export interface Row {
  meta: PlanMeta;
  r: EntryResult;
}

/** The row with the least remaining of a kind (requests/tokens), enforced limits only. */
function least(rows: Row[], kind: 'requests' | 'tokens'): Row | undefined {
  let best: Row | undefined;
  for (const row of rows) {
    if (row.meta.limit.kind !== kind || row.meta.shadow) continue;
    if (!best || row.r.remaining < best.r.remaining) best = row;
  }
  return best;
}

/** The enforced row with the smallest remaining share. */
export function tightest(rows: Row[]): Row | undefined {
  let best: Row | undefined;
  let share = Number.POSITIVE_INFINITY;
  for (const row of rows) {
    if (row.meta.shadow) continue;
    const s = row.r.remaining / row.meta.limit.amount;
    if (s < share) {
      share = s;
      best = row;
    }
  }
  return best;
}

/**
 * Adds the headers describing `rows` (one candidate's limits). `binding` picks the unsuffixed X-RateLimit-*
 * row; when omitted, the tightest row is used. Reset is epoch seconds (X-RateLimit-Reset) and a duration
 * (OpenAI's x-ratelimit-reset-*): when the row is over its limit, the time until this call would fit;
 * otherwise the time until the limit is whole again (rolling) or the window ends (calendar).
 */
/** Header names per kind, built once (a computed name would be a new string to intern on every call). */
const KIND_HEADERS = (['requests', 'tokens'] as const).map((kind) => ({
  kind,
  limit: `x-ratelimit-limit-${kind}`,
  remaining: `x-ratelimit-remaining-${kind}`,
  reset: `x-ratelimit-reset-${kind}`,
}));

export function rateLimitHeaders(h: Headers, rows: Row[], nowMs: number, binding?: Row): void {
  for (const k of KIND_HEADERS) {
    const row = least(rows, k.kind);
    if (!row) continue;
    h[k.limit] = String(row.meta.limit.amount);
    h[k.remaining] = String(Math.max(0, row.r.remaining));
    h[k.reset] = openAiDuration(row.r.retryMs > 0 ? row.r.retryMs : row.r.resetMs);
  }
  const b = binding ?? tightest(rows);
  if (b) {
    h['x-ratelimit-limit'] = String(b.meta.limit.amount);
    h['x-ratelimit-remaining'] = String(Math.max(0, b.r.remaining));
    const untilMs = b.r.retryMs > 0 ? b.r.retryMs : b.r.resetMs;
    h['x-ratelimit-reset'] = String(Math.ceil((nowMs + Math.max(0, untilMs)) / 1000));
  }
}
