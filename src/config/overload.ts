/**
 * Config keys of the overload bounds (docs/overload.md): server.overload_budget,
 * server.max_buffered_bytes; store.max_inflight's default.
 */
import type { Checker } from './schema.js';
import { parseDuration } from './units.js';

/**
 * The default budget is 3 × decision_deadline: 150 ms for the default 50 ms, well under the 250 ms
 * ext_authz timeout of the shipped envoy.yaml.
 */
export const OVERLOAD_BUDGET_DEADLINES = 3;
export const DEFAULT_MAX_INFLIGHT = 64;
const MIB = 1024 * 1024;

/** The gRPC receive limit for a max_body_bytes (one message, as grpc-js is configured in app.ts). */
export const receiveLimit = (maxBodyBytes: number) => 2 * maxBodyBytes + MIB;

export function overloadServer(
  c: Checker,
  sv: Record<string, unknown>,
  server: { decisionDeadlineMs: number; maxBodyBytes: number },
): { overloadBudgetMs: number; maxBufferedBytes: number } {
  let overloadBudgetMs = OVERLOAD_BUDGET_DEADLINES * server.decisionDeadlineMs;
  if (sv.overload_budget !== undefined) {
    const ms = parseDuration(sv.overload_budget);
    if (ms === undefined) c.fail('server.overload_budget', 'a duration like 150ms', sv.overload_budget);
    else overloadBudgetMs = ms;
  }
  if (overloadBudgetMs < server.decisionDeadlineMs)
    c.problems.push(
      `server.overload_budget: expected at least server.decision_deadline (${server.decisionDeadlineMs} ms), got ${overloadBudgetMs} ms`,
    );
  // Room for one largest message twice over, and at least 64 MiB.
  const one = receiveLimit(server.maxBodyBytes);
  let maxBufferedBytes = Math.max(64 * MIB, 2 * one);
  if (sv.max_buffered_bytes !== undefined) {
    const n = c.int('server.max_buffered_bytes', sv.max_buffered_bytes, one);
    if (n !== undefined) maxBufferedBytes = n;
  }
  return { overloadBudgetMs, maxBufferedBytes };
}
