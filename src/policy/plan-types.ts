import type { LimitConfig } from '../config/types.js';

/**
 * What policy decides a call must be checked against: per candidate model, the limits that apply, each
 * with its key, window, capacity and cost — a plan, computed by src/policy/plan.ts. The store runs it
 * (src/store/types.ts planArgs encodes it for the Lua script; the memory store reads it directly).
 */

export enum EntryKind {
  Rolling = 1,
  Calendar = 2,
  /** A concurrency limit: one slot (a lease until settled or expired) per call in flight. */
  Concurrent = 3,
}

/** How long a settled reservation's mark is kept (a repeated settle answers 'duplicate'). */
export const SETTLED_TTL_MS = 120_000;

/** Longest Retry-After a full concurrency limit answers (a slot frees when any call in flight ends). */
export const CONCURRENT_RETRY_MAX_MS = 2000;

/** Calendar units as the Lua script numbers them. */
export const CALENDAR_CODE = { hourly: 1, daily: 2, weekly: 3, monthly: 4 } as const;

export interface PlanEntry {
  /** Index into CheckPlan.keys. */
  key: number;
  kind: EntryKind;
  capacity: number;
  /** Rolling: window in ms. Calendar: unit code (CALENDAR_CODE). Concurrent: lease in ms. */
  period: number;
  /** Calendar: minutes east of UTC for the quota's time zone. */
  tzOffsetMin: number;
  /**
   * Calendar in a time zone: the ends (ms, epoch) of the zone's window containing the caller's clock
   * and of the next one (store/calendar.ts zonedWindow); 0 or absent = fixed-offset arithmetic.
   */
  zoneEnd?: number;
  zoneNext?: number;
  cost: number;
  shadow: boolean;
  /** when_exhausted: queue — a call blocked only by such limits may be queued. */
  queueable?: boolean;
  /** Remaining units below which the candidate is skipped if a later candidate exists (0 = off). */
  downgradeAt: number;
}

export interface CheckPlan {
  keys: string[];
  /** Best first: requested model, then fallbacks. */
  candidates: PlanEntry[][];
  /** Decide without debiting (dry runs). */
  dryRun?: boolean;
  /**
   * Queue tier: where to append a call that fits no candidate. Its stream key and its accounting
   * hash (bytes, per-tenant entries and bytes) are the last two of `keys`.
   */
  queue?: QueueRequest;
  /**
   * Recorded with the debit when a candidate is chosen, so the response phase can settle the call to
   * what it used (src/settle/). Its key is `keys[reservation.key]` (before any queue keys).
   */
  reservation?: ReservationRequest;
}

export interface ReservationRequest {
  /** Index into CheckPlan.keys of the reservation record's key. */
  key: number;
  /** The reservation id (random, unguessable): also the member holding concurrency slots. */
  id: string;
  ttlMs: number;
  /** Per candidate: what settlement needs to price the call's actual usage (opaque to the store). */
  records: string[];
}

/** One limit a chosen candidate debited, as the reservation record keeps it. */
export interface ReservedEntry {
  /** Position in the chosen candidate's entries (PlanEntry order). */
  index: number;
  key: string;
  kind: EntryKind;
  capacity: number;
  period: number;
  /** Units debited. */
  cost: number;
  /** Calendar: the window end the debit went to (a refund never lands in a later window). */
  windowEnd: number;
  /** Calendar: the end of the window after it (where an excess goes once the first is over). */
  nextEnd: number;
}

/** A reservation as stored: the chosen candidate's record and the limits it debited. */
export interface Reservation {
  id: string;
  record: string;
  entries: ReservedEntry[];
  /** Already settled (a second settle does nothing). */
  settled: boolean;
}

export interface SettleRequest {
  /** The reservation record's key, and the reservation as read from it. */
  key: string;
  reservation: Reservation;
  /** Per reservation entry: units actually used (concurrency slots are released whatever it says). */
  actual: number[];
  /** Billing export (Valkey only): one stream entry, written only when this settle applies. */
  export?: { stream: string; maxLength: number; fields: string[] };
}

export type SettleOutcome = 'settled' | 'duplicate' | 'missing';

export interface SettleResult {
  outcome: SettleOutcome;
  /** Per reservation entry, units left after settling (when settled). */
  remaining: number[];
}
export interface QueueRequest {
  name: string;
  maxLength: number;
  /** Bytes every queued entry of this queue may take together, and one tenant's share. */
  maxBytes: number;
  tenantMaxEntries: number;
  tenantMaxBytes: number;
  /** The tenant as a key part (safeId): the accounting hash's field names. */
  tenantKey: string;
  id: string;
  tenant: string;
  model: string;
  cost: number;
  body: string | Buffer;
}

/** Why a queue refused an entry (the script's code, after outcome 4). */

/** How the store names a limit's keys (src/store/keys.ts): policy adds the scope parts. */
export interface KeyNames {
  /** The key of a limit without its scope: `<prefix>:r:<limit>` or `<prefix>:c:<limit>:<unit>[@<zone>]`. */
  limitPrefix(storePrefix: string, limit: Pick<LimitConfig, 'name' | 'window'>): string;
  /** A scope part of the `store.shard_by` dimension: a cluster hash tag (`{part}`). */
  shardPart(part: string): string;
}
