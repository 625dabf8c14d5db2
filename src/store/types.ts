/** What a store is asked and what it answers. Both backends (Valkey, memory) share these shapes and one test suite. */

export {
  CALENDAR_CODE,
  type CheckPlan,
  EntryKind,
  type PlanEntry,
  type QueueRequest,
  type Reservation,
  type ReservationRequest,
  type ReservedEntry,
  type SettleOutcome,
  type SettleRequest,
  type SettleResult,
} from '../policy/plan-types.js';

import type { CheckPlan, PlanEntry, Reservation, SettleRequest, SettleResult } from '../policy/plan-types.js';

/**
 * An operator's one-off change to one limit's state for one scope (lua/adjust-limit.lua): `credit`
 * adds `amount` units (a rolling bucket up to its capacity; a calendar quota's current window, which
 * may go below zero used), `reset` refills it to full (a concurrency limit: every slot released).
 */
export interface AdjustRequest {
  op: 'credit' | 'reset';
  /** The limit's state key for the scope (CheckPlan.keys[entry.key]). */
  key: string;
  /** The limit as a plan entry (kind, capacity, period, time zone): its `key` and `cost` are not read. */
  entry: PlanEntry;
  /** Units to add (credit). */
  amount: number;
}

export interface AdjustResult {
  /** Units left now. */
  remaining: number;
  /** Rolling: ms until full; calendar: ms until the window ends; concurrency: 0. */
  resetMs: number;
  /** The store's clock (ms since epoch). */
  nowMs: number;
}

export enum QueueFullReason {
  Entries = 1,
  Bytes = 2,
  TenantEntries = 3,
  TenantBytes = 4,
}

/** Numeric results of the Lua script, mapped to names. */
export enum Outcome {
  Allowed = 0,
  Denied = 1,
  Never = 2,
  Queued = 3,
  QueueFull = 4,
}

export enum EntryStatus {
  Fits = 0,
  Exceeded = 1,
  Never = 2,
  BelowDowngrade = 3,
}

export interface EntryResult {
  status: EntryStatus;
  /** Units left after this call if it was debited, else now. */
  remaining: number;
  /** Rolling: ms until full; calendar: ms until window end. */
  resetMs: number;
  /** ms until this entry fits the cost; 0 fits now; -1 never. */
  retryMs: number;
}

export interface CheckResult {
  outcome: Outcome;
  /** Index of the debited candidate, -1 when denied. */
  chosen: number;
  /** Earliest ms until any candidate fits (denied), -1 never, 0 allowed. */
  retryMs: number;
  /** Store's clock (ms since epoch). */
  nowMs: number;
  candidates: EntryResult[][];
  /** Stream entry id when outcome is Queued. */
  streamId?: string;
  /** Which bound refused the entry when outcome is QueueFull. */
  queueFull?: QueueFullReason;
}

export interface Store {
  readonly kind: 'valkey' | 'memory';
  /**
   * `budgetAt` (performance.now() time, optional): past it, a call the store is still working towards
   * (replies keep arriving) is given up with OverloadedError('sent'); without replies for the per-call
   * timeout it fails with StoreTimeoutError (silent store). See src/resilience/timeout.ts.
   */
  check(plan: CheckPlan, budgetAt?: number): Promise<CheckResult>;
  /** The reservation recorded under `key` (src/store/keys.ts reservationKey), if it has not expired. */
  reservation(key: string): Promise<Reservation | undefined>;
  /**
   * Settle a reservation to what the call used, atomically and once: refund (or debit) each limit the
   * difference, release concurrency slots, write the export entry. 'duplicate' when already settled,
   * 'missing' when the record is gone (expired, never made, or another store's).
   */
  settle(req: SettleRequest): Promise<SettleResult>;
  /** An operator's credit or reset (src/admin/), atomically; absent on stores that cannot. */
  adjust?(req: AdjustRequest): Promise<AdjustResult>;
  /** Optional (Valkey): entries in each stream (XLEN), e.g. the queue tier's streams, for metrics. */
  streamLengths?(keys: string[]): Promise<number[]>;
  /** Optional: apply a new per-call timeout after a config reload. */
  setTimeoutMs?(ms: number): void;
  /** Resolves when the store answers. */
  ping(): Promise<void>;
  /**
   * Clock time (ms) of the store's latest successful reply, including replies that arrived after their
   * call had already timed out: proof the store is alive. Undefined for stores that never time out.
   */
  readonly lastReplyAt?: number;
  /** performance.now() of the latest reply of any kind on the store's connection (progress). */
  readonly progressAt?: number;
  /** store.topology: cluster: slot-spanning checks and compensated ones (src/store/cluster-check.ts). */
  readonly clusterStats?: { spanning: number; compensated: number; exportLost: number };
  /** store.wait_replicas: WAITs that got fewer replicas than asked, or failed (src/store/wait.ts). */
  readonly waitShort?: number;
  close(): Promise<void>;
}

/** Flatten a plan into the script's ARGV layout (see lua/check-limits.lua). */
export function planArgs(plan: CheckPlan): (string | number)[] {
  const args: (string | number)[] = [plan.candidates.length, plan.dryRun ? 1 : 0];
  for (const cand of plan.candidates) {
    args.push(cand.length);
    for (const e of cand) {
      const zoned = e.zoneEnd ? 4 : 0;
      const flags = (e.shadow ? 1 : 0) | (e.queueable ? 2 : 0) | zoned;
      args.push(e.key + 1, e.kind, e.capacity, e.period, e.tzOffsetMin, e.cost, flags, e.downgradeAt);
      if (zoned) args.push(e.zoneEnd!, e.zoneNext!);
    }
  }
  const r = plan.reservation;
  // the reservation part comes before the queue part: its record per candidate follows
  if (r) args.push(1, r.key + 1, r.id, r.ttlMs, ...r.records);
  else args.push(0);
  const q = plan.queue;
  if (q) {
    const body = typeof q.body === 'string' ? q.body : q.body.toString('utf8');
    args.push(1, q.maxLength, q.id, q.tenant, q.model, q.cost, body);
    args.push(q.maxBytes, q.tenantMaxEntries, q.tenantMaxBytes, q.tenantKey);
  }
  return args;
}

/** lua/adjust-limit.lua's ARGV for `req`. */
export function adjustArgs(req: AdjustRequest): (string | number)[] {
  const e = req.entry;
  return [req.op, e.kind, e.capacity, e.period, e.tzOffsetMin, req.amount, e.zoneEnd ?? 0, e.zoneNext ?? 0];
}

/** Map the script's flat integer reply back to a CheckResult. */
export function parseReply(plan: CheckPlan, reply: (number | string)[]): CheckResult {
  let i = 4;
  const candidates = plan.candidates.map((cand) =>
    cand.map(() => {
      const r: EntryResult = {
        status: reply[i] as number,
        remaining: reply[i + 1] as number,
        resetMs: reply[i + 2] as number,
        retryMs: reply[i + 3] as number,
      };
      i += 4;
      return r;
    }),
  );
  const res: CheckResult = {
    outcome: reply[0] as number,
    chosen: (reply[1] as number) - 1,
    retryMs: reply[2] as number,
    nowMs: reply[3] as number,
    candidates,
  };
  if (i < reply.length) {
    if (res.outcome === Outcome.QueueFull) res.queueFull = reply[i] as number;
    else res.streamId = String(reply[i]);
  }
  return res;
}
