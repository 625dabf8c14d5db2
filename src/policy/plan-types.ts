import type { LimitConfig } from '../config/types.js';

/**
 * What policy decides a call must be checked against: per candidate model, the limits that apply, each
 * with its key, window, capacity and cost — a plan, computed by src/policy/plan.ts. The store runs it
 * (src/store/types.ts planArgs encodes it for the Lua script; the memory store reads it directly).
 */

export enum EntryKind {
  Rolling = 1,
  Calendar = 2,
}

/** Calendar units as the Lua script numbers them. */
export const CALENDAR_CODE = { hourly: 1, daily: 2, weekly: 3, monthly: 4 } as const;

export interface PlanEntry {
  /** Index into CheckPlan.keys. */
  key: number;
  kind: EntryKind;
  capacity: number;
  /** Rolling: window in ms. Calendar: unit code (CALENDAR_CODE). */
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
}
