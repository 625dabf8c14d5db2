/**
 * `queues` (the opt-in queue tier; needs Valkey), the `when_exhausted` / `queue` pair that models and
 * limits share, and the small top-level keys `tool_weights` and `mode`.
 */
import { z } from 'zod';
import { int, mapping, NAME, oneOf, problem, str } from './fields.js';

export const DEFAULT_QUEUE_MAX_LENGTH = 10_000;
export const DEFAULT_QUEUE_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_TENANT_SHARE = 0.25;
const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };
const SIZE = /^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)\s*$/;

/** 1048576, "1MiB", "512KiB", "2GiB" → bytes; undefined otherwise. */
export function parseBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = SIZE.exec(v);
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * UNITS[m[2]]);
  return n > 0 ? n : undefined;
}

/** A size from 1KiB to 1PiB: bytes, or a string like "64MiB". */
function bytes() {
  const e = { error: 'expected a size from 1KiB, like 67108864, "64MiB" or "1GiB"' };
  return z
    .union(
      [
        z
          .number(e)
          .int(e)
          .min(1024, e)
          .max(2 ** 50, e),
        z.string(e).regex(SIZE, e),
      ],
      e,
    )
    .transform((v, ctx) => {
      const n = parseBytes(v);
      if (n === undefined || n < 1024 || n > 2 ** 50)
        ctx.issues.push({ code: 'custom', message: e.error, input: v });
      return n ?? 0;
    });
}

/** The share of a queue one tenant may hold: "25%" or 0.25, above 0 and at most 100%. */
function tenantShare() {
  const e = { error: 'expected a share like 25% (100% = no per-tenant bound)' };
  return z
    .union([z.number(e).gt(0, e).lte(1, e), z.string(e).regex(/^\s*\d+(\.\d+)?%\s*$/, e)], e)
    .transform((v, ctx) => {
      const n = typeof v === 'number' ? v : Number(v.trim().slice(0, -1)) / 100;
      if (!(n > 0 && n <= 1)) ctx.issues.push({ code: 'custom', message: e.error, input: v });
      return n;
    });
}

/**
 * queues.<name>: the queue tier's bounds. A queued entry holds the request body in Valkey, so every
 * queue is bounded in entries AND bytes, and each tenant may hold only a share of both.
 */
const queueSchema = mapping({
  /** Entries the stream may hold; a full queue answers 429 (never trimmed). */
  max_length: int(1, 100_000_000).default(DEFAULT_QUEUE_MAX_LENGTH),
  /** Bytes the queued entries may take (bodies + fields + a fixed overhead per entry). */
  max_bytes: bytes().default(DEFAULT_QUEUE_MAX_BYTES),
  /** The share of max_length and of max_bytes one tenant may hold (100% = no per-tenant bound). */
  tenant_share: tenantShare().default(DEFAULT_TENANT_SHARE),
}).nullable();

export const queuesSchema = z
  .record(z.string().regex(NAME), queueSchema, {
    error: (iss) =>
      iss.code === 'invalid_key'
        ? 'expected a queue name of 1-64 letters, digits, "_", "-", "."'
        : 'expected a mapping',
  })
  .transform((qs) => new Map(Object.entries(qs).map(([name, q]) => [name, toQueue(name, q)])));

function toQueue(name: string, q: z.output<typeof queueSchema>) {
  const maxLength = q?.max_length ?? DEFAULT_QUEUE_MAX_LENGTH;
  const maxBytes = q?.max_bytes ?? DEFAULT_QUEUE_MAX_BYTES;
  const share = q?.tenant_share ?? DEFAULT_TENANT_SHARE;
  return {
    name,
    /** Entries the stream may hold; a full queue answers 429 (never trimmed). */
    maxLength,
    /** Bytes the queued entries may take (bodies + fields + a fixed overhead per entry). */
    maxBytes,
    /** Entries / bytes one tenant may hold (queues.<name>.tenant_share of the two above). */
    tenantMaxEntries: Math.max(1, Math.floor(maxLength * share)),
    tenantMaxBytes: Math.max(1, Math.floor(maxBytes * share)),
  };
}

export type QueueConfig = ReturnType<typeof toQueue>;

/** `when_exhausted: queue` sends calls that fit no limit to a queue instead of denying them. */
export const exhaustedFields = {
  when_exhausted: oneOf(['deny', 'queue']).optional(),
  /** Optional when exactly one queue is configured. */
  queue: str('a queue name').optional(),
};

export function queueOnlyWithQueueing(
  o: { when_exhausted?: string; queue?: string } | null,
  ctx: z.core.$RefinementCtx,
): void {
  if (o?.queue !== undefined && o.when_exhausted !== 'queue')
    problem(ctx, ['queue'], 'only valid with when_exhausted: queue');
}

/**
 * The queue a model or limit with `when_exhausted: queue` uses (the only one configured when it names
 * none), or a problem.
 */
export function resolveQueue(
  o: { whenExhausted?: string; queue?: string },
  queues: Map<string, unknown>,
): { queue?: string; problem?: string } {
  if (o.whenExhausted !== 'queue') return {};
  if (o.queue === undefined) {
    if (queues.size === 1) return { queue: [...queues.keys()][0] };
    return { problem: `expected the name of a queue under "queues" (${queues.size} configured)` };
  }
  if (!queues.has(o.queue))
    return {
      problem: `expected a queue defined under "queues" (${[...queues.keys()].join(', ') || 'none'}), got "${o.queue}"`,
    };
  return { queue: o.queue };
}

/** Tool name → request weight for `count: weighted` limits ("*" = any other tool; default 1). */
export const toolWeightsSchema = z
  .record(z.string(), int(0, 1_000_000), { error: 'expected a mapping' })
  .transform((tw) => new Map(Object.entries(tw)));

/** Global mode: shadow decides and counts but always allows. */
export const modeSchema = oneOf(['enforce', 'shadow']).default('enforce');
