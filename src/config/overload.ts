/**
 * Config keys of the overload bounds (docs/overload.md): server.overload_budget,
 * server.max_buffered_bytes (their defaults and checks depend on other server fields, so they are
 * checked here, from src/config/schema/server.ts); store.max_inflight's default.
 */
import { z } from 'zod';
import { duration, problem } from './schema/fields.js';

/**
 * The default budget is 3 × decision_deadline: 150 ms for the default 50 ms, well under the 250 ms
 * ext_authz timeout of the shipped envoy.yaml.
 */
export const OVERLOAD_BUDGET_DEADLINES = 3;
export const DEFAULT_MAX_INFLIGHT = 64;
const MIB = 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES = 8 * MIB;
const DEFAULT_DEADLINE_MS = 50;

/** The gRPC receive limit for a max_body_bytes (one message, as grpc-js is configured in app.ts). */
export const receiveLimit = (maxBodyBytes: number) => 2 * maxBodyBytes + MIB;

/** Room for one largest message twice over, and at least 64 MiB. */
export const defaultMaxBufferedBytes = (maxBodyBytes: number) =>
  Math.max(64 * MIB, 2 * receiveLimit(maxBodyBytes));

/** The server fields; max_buffered_bytes's lower bound (one message) is checked in checkOverload. */
export const overloadFields = {
  overload_budget: duration('150ms').optional(),
  max_buffered_bytes: z
    .unknown()
    .optional()
    .meta({ type: 'integer', minimum: receiveLimit(1024) }),
};

interface ServerFields {
  decision_deadline: unknown;
  max_body_bytes: unknown;
  overload_budget?: unknown;
  max_buffered_bytes?: unknown;
}

/**
 * overload_budget is at least decision_deadline; max_buffered_bytes holds one largest message. Runs
 * beside field problems (a field with a problem counts as its default, as before).
 */
export function checkOverload(s: ServerFields, ctx: z.core.$RefinementCtx): void {
  const bad = new Set(ctx.issues.map((i) => i.path?.[0]));
  const deadline = bad.has('decision_deadline') ? DEFAULT_DEADLINE_MS : (s.decision_deadline as number);
  const budget = s.overload_budget ?? OVERLOAD_BUDGET_DEADLINES * deadline;
  if (!bad.has('overload_budget') && (budget as number) < deadline)
    problem(
      ctx,
      ['overload_budget'],
      `expected at least server.decision_deadline (${deadline} ms), got ${budget} ms`,
    );
  const v = s.max_buffered_bytes;
  const body = bad.has('max_body_bytes') ? DEFAULT_MAX_BODY_BYTES : (s.max_body_bytes as number);
  const one = receiveLimit(body);
  const ok = typeof v === 'number' && Number.isInteger(v) && v >= one && v <= Number.MAX_SAFE_INTEGER;
  if (v !== undefined && !ok)
    ctx.addIssue({
      code: 'custom',
      path: ['max_buffered_bytes'],
      input: v,
      message: `expected an integer from ${one} to ${Number.MAX_SAFE_INTEGER}`,
    });
}
