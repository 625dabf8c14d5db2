/**
 * The settle script's codec (lua/settle-reservation.lua) and the reservation record's reading, shared
 * by both Valkey clients. The record is the hash the check script writes (lua/check-limits.lua, "the
 * reservation part").
 */
import {
  EntryKind,
  type Reservation,
  type ReservedEntry,
  type SettleRequest,
  type SettleResult,
} from '../policy/plan-types.js';

/** Fields read from a reservation record, in this order (HMGET). */
export const RESERVATION_FIELDS = ['r', 'id', 'e', 's'] as const;

/** The HMGET reply of RESERVATION_FIELDS → the reservation, or undefined when there is none. */
export function parseReservation(reply: unknown): Reservation | undefined {
  if (!Array.isArray(reply)) return undefined;
  const [record, id, e, s] = reply.map((v) => (v === null || v === undefined ? undefined : String(v)));
  if (id === undefined) return undefined;
  if (s !== undefined) return { id, record: '', entries: [], settled: true };
  if (record === undefined || e === undefined) return undefined;
  const raw = JSON.parse(e) as unknown;
  // an empty Lua table encodes as {}
  const list = Array.isArray(raw) ? (raw as unknown[][]) : [];
  const entries: ReservedEntry[] = list.map((x) => ({
    index: Number(x[0]),
    key: String(x[1]),
    kind: Number(x[2]) as EntryKind,
    capacity: Number(x[3]),
    period: Number(x[4]),
    cost: Number(x[5]),
    windowEnd: Number(x[6]),
    nextEnd: Number(x[7] ?? 0),
  }));
  return { id, record, entries, settled: s !== undefined };
}

/** KEYS and ARGV of one settle call (without EVALSHA, sha, numkeys). */
export function settleCall(req: SettleRequest): { keys: string[]; args: (string | number)[] } {
  const { entries } = req.reservation;
  if (req.actual.length !== entries.length)
    throw new Error(`settle: ${req.actual.length} actual costs for ${entries.length} entries`);
  const keys = [req.key, ...entries.map((e) => e.key)];
  const args: (string | number)[] = [entries.length, ...req.actual.map((a) => Math.max(0, Math.ceil(a)))];
  if (req.export) {
    keys.push(req.export.stream);
    args.push(1, req.export.maxLength, ...req.export.fields);
  } else args.push(0);
  return { keys, args };
}

export function parseSettleReply(reply: unknown): SettleResult {
  const r = reply as number[];
  if (r[0] === 1) return { outcome: 'settled', remaining: r.slice(1).map(Number) };
  return { outcome: r[0] === 2 ? 'duplicate' : 'missing', remaining: [] };
}

export { EntryKind };
