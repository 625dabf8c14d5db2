/**
 * `queues` (the opt-in queue tier; needs Valkey), the `when_exhausted` / `queue` pair that models and
 * limits share, and the small top-level keys `tool_weights` and `mode`.
 */
import { z } from 'zod';
import { int, mapping, NAME, oneOf, problem, str } from './fields.js';

export const queuesSchema = z
  .record(
    z.string().regex(NAME),
    mapping({
      /** Entries the stream may hold; a full queue answers 429 (never trimmed). */
      max_length: int(1, 100_000_000).default(10_000),
    })
      .nullable()
      .transform((q) => q ?? { max_length: 10_000 }),
    {
      error: (iss) =>
        iss.code === 'invalid_key'
          ? 'expected a queue name of 1-64 letters, digits, "_", "-", "."'
          : 'expected a mapping',
    },
  )
  .transform(
    (qs) => new Map(Object.entries(qs).map(([name, q]) => [name, { name, maxLength: q.max_length }])),
  );

export type QueueConfig = z.output<typeof queuesSchema> extends Map<string, infer Q> ? Q : never;

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
