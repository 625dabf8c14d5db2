/**
 * `limits`: each names a scope (`per`), optionally the models it covers, one amount (requests | tokens
 * | usd) and a window: `every` (rolling token bucket) or `reset` (calendar quota).
 */
import { z } from 'zod';
import { usdToMicros } from '../units.js';
import {
  always,
  duration,
  int,
  mapping,
  NAME,
  NAME_TEXT,
  num,
  oneOf,
  oneOrMany,
  problem,
  share,
  str,
  whenValid,
} from './fields.js';
import { exhaustedFields, queueOnlyWithQueueing } from './queues.js';

const KINDS = ['requests', 'tokens', 'usd', 'concurrent'] as const;
/** How long a concurrency slot is held when its call is never settled (limits[].lease). */
export const DEFAULT_LEASE_MS = 10 * 60_000;
const CALENDAR = ['hourly', 'daily', 'weekly', 'monthly'] as const;
export type LimitKind = (typeof KINDS)[number];
export type CalendarUnit = (typeof CALENDAR)[number];

function validTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const limitFields = mapping({
  name: str(NAME_TEXT, NAME),
  /** Identity dimensions (and/or "model") that make up the key. Omitted = one global limit. */
  per: oneOrMany(z.string(), 'a dimension name or a list of them').optional(),
  /** Models the limit applies to; omitted = every model. */
  models: z
    .array(z.string({ error: 'expected a model name' }), {
      error: 'expected a non-empty list of model names',
    })
    .min(1, { error: 'expected a non-empty list of model names' })
    .optional(),
  requests: int(1).optional(),
  tokens: int(1).optional(),
  usd: num(0.000001).optional(),
  /** At most this many calls in flight per scope (a slot is released when the call is settled). */
  concurrent: int(1, 1_000_000).optional(),
  lease: duration('10m, 30s').optional(),
  every: duration('30s, 1m, 1h, 1d').optional(),
  reset: oneOf(CALENDAR).optional(),
  timezone: str('a string')
    .refine(validTimezone, { error: 'expected an IANA time zone name like Europe/Berlin' })
    .optional(),
  mode: oneOf(['enforce', 'shadow']).default('enforce'),
  downgrade_below: share().optional(),
  when: z
    .record(z.string(), z.union([z.string(), z.number()], { error: 'expected a value' }), {
      error: 'expected a mapping',
    })
    .optional(),
  ...exhaustedFields,
  count: oneOf(['each', 'weighted']).optional(),
});

type LimitFields = z.output<typeof limitFields>;

/** The rules between a limit's fields; they read presence only, so they run beside field problems. */
function limitRules(o: LimitFields, ctx: z.core.$RefinementCtx<LimitFields>): void {
  const kinds = KINDS.filter((k) => o[k] !== undefined);
  if (kinds.length !== 1)
    problem(
      ctx,
      [],
      `expected exactly one of requests, tokens, usd, concurrent (found ${kinds.join(', ') || 'none'})`,
    );
  if (o.concurrent !== undefined) {
    if (o.every !== undefined || o.reset !== undefined)
      problem(
        ctx,
        [],
        'concurrent limits take no every or reset (a slot is held until the call is settled or its lease ends)',
      );
    if (o.timezone !== undefined) problem(ctx, ['timezone'], 'only valid with reset (calendar quota)');
    if (o.downgrade_below !== undefined)
      problem(ctx, ['downgrade_below'], 'not supported on concurrent limits');
  } else if (o.lease !== undefined) problem(ctx, ['lease'], 'only valid with concurrent');
  else if ((o.every === undefined) === (o.reset === undefined))
    problem(ctx, [], 'expected exactly one of every (rolling window) or reset (calendar quota)');
  else if (o.every !== undefined && o.timezone !== undefined)
    problem(ctx, ['timezone'], 'only valid with reset (calendar quota)');
  if (o.count === 'weighted' && (kinds.length !== 1 || kinds[0] !== 'requests'))
    problem(ctx, ['count'], 'weighted counting applies to requests limits only');
  queueOnlyWithQueueing(o, ctx);
}

function toLimit(o: LimitFields) {
  const kind = KINDS.find((k) => o[k] !== undefined) as LimitKind;
  const window: LimitWindow =
    kind === 'concurrent'
      ? { type: 'concurrent', leaseMs: o.lease ?? DEFAULT_LEASE_MS }
      : o.every !== undefined
        ? { type: 'rolling', ms: o.every }
        : {
            type: 'calendar',
            unit: o.reset as CalendarUnit,
            ...(o.timezone && o.timezone !== 'UTC' ? { timezone: o.timezone } : {}),
          };
  return {
    name: o.name,
    per: o.per ?? [],
    models: o.models,
    kind,
    /** Capacity in integer units: requests, tokens, or micro-dollars. */
    amount: kind === 'usd' ? usdToMicros(o.usd as number) : (o[kind] as number),
    window,
    shadow: o.mode === 'shadow',
    /** Share of the limit (0..1) below which calls with a fallback are routed to it. */
    downgradeBelow: o.downgrade_below,
    /** Apply only when each named dimension has the given value. */
    when: o.when && Object.fromEntries(Object.entries(o.when).map(([k, v]) => [k, String(v)])),
    /** requests limits: count each call as its tool weight (count: weighted) instead of 1. */
    weighted: o.count === 'weighted',
    whenExhausted: o.when_exhausted,
    queue: o.queue,
  };
}

export type LimitWindow =
  | { type: 'rolling'; ms: number }
  /** A concurrency limit: slots held until settled, at most leaseMs. */
  | { type: 'concurrent'; leaseMs: number }
  | { type: 'calendar'; unit: CalendarUnit; timezone?: string };

export const limitSchema = limitFields.superRefine(limitRules, always).transform(toLimit);

export const limitsSchema = z
  .array(limitSchema, { error: 'expected a list of limits' })
  .superRefine((limits, ctx) => {
    const names = new Set<string>();
    limits.forEach((l, i) => {
      if (names.has(l.name)) problem(ctx, [i, 'name'], `duplicate limit name "${l.name}"`);
      names.add(l.name);
    });
  }, whenValid);

/** A limit as the rest of tollgate reads it (`queue` resolved against `queues`). */
export type LimitConfig = Omit<z.output<typeof limitSchema>, 'whenExhausted' | 'queue'> & {
  /** when_exhausted: queue — the queue a call blocked by this limit goes to. */
  queue?: string;
};
