/**
 * The answer to a check shed as overloaded (docs/overload.md): the store was answering, but not this
 * check within server.overload_budget. A retryable 503 with `Retry-After: 1`, never an unmetered
 * allow — except when every limit of the call is a shadow limit (mode: shadow): shadow never denies.
 */
import type { BuiltPlan } from '../policy/plan.js';
import type { Decision, DecisionStats, Headers } from './types.js';

export function overloaded(
  built: BuiltPlan,
  marks: Headers,
  clientSent: string[],
  stats: DecisionStats,
): Decision {
  if (built.meta.every((m) => m.every((x) => x.shadow))) {
    const h: Headers = { ...marks, 'x-tollgate-shadow': 'overloaded' };
    const removeHeaders = clientSent.filter((k) => !(k in h));
    return {
      kind: 'allow',
      reason: 'shadow',
      upstreamHeaders: h,
      responseHeaders: { ...h },
      removeHeaders,
      stats,
    };
  }
  return {
    kind: 'deny',
    reason: 'overloaded',
    httpStatus: 503,
    headers: { ...marks, 'content-type': 'application/json', 'retry-after': '1', 'x-should-retry': 'true' },
    body: JSON.stringify({
      error: {
        message: 'Rate limiter overloaded; try again shortly.',
        type: 'server_error',
        code: 'overloaded',
        param: null,
      },
    }),
    stats,
  };
}
