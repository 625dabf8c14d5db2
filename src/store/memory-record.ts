/**
 * A reservation record of the in-memory store as one flat string (memory-ledger.ts): no object graph
 * per record for a full GC to mark (a Reservation with its entries array and entry objects is ~10
 * heap objects), and no pointers inside it to scan. Fields joined by '|', strings length-prefixed so
 * they may hold any character ('|' included, lone surrogates too), numbers as JavaScript writes them
 * (shortest round trip: exact for every double, Infinity and NaN; -0 spelled out):
 *
 *   expiresAt | settled (0/1) | id length | id | record length | record
 *   then per entry: index | kind | capacity | period | cost | windowEnd | nextEnd | key length | key
 *
 * expiresAt leads, so a sweep reads it without decoding the rest.
 */
import type { EntryKind, Reservation, ReservedEntry } from '../policy/plan-types.js';

const SEP = '|';
const BAR = SEP.charCodeAt(0);
const FIELDS = 9;

/** -0 written as such (String(-0) is '0'); every other number as JavaScript writes it. */
function num(n: number): number | string {
  return n === 0 && 1 / n < 0 ? '-0' : n;
}

export function encodeRecord(r: Reservation, expiresAt: number): string {
  const parts: (string | number)[] = new Array(6 + FIELDS * r.entries.length);
  parts[0] = num(expiresAt);
  parts[1] = r.settled ? 1 : 0;
  parts[2] = r.id.length;
  parts[3] = r.id;
  parts[4] = r.record.length;
  parts[5] = r.record;
  let p = 6;
  for (const e of r.entries) {
    parts[p] = num(e.index);
    parts[p + 1] = num(e.kind);
    parts[p + 2] = num(e.capacity);
    parts[p + 3] = num(e.period);
    parts[p + 4] = num(e.cost);
    parts[p + 5] = num(e.windowEnd);
    parts[p + 6] = num(e.nextEnd);
    parts[p + 7] = e.key.length;
    parts[p + 8] = e.key;
    p += FIELDS;
  }
  // join writes one flat string (a concatenation would keep a tree of string parts)
  return parts.join(SEP);
}

/** Where the next field starts in the string being read (decoding is synchronous: one cursor). */
let at = 0;

/** The number at `at`; moves past it and its '|'. */
function readNum(s: string): number {
  const from = at;
  let i = from;
  let v = 0;
  // fast path: up to 15 decimal digits (below 2^53: exact); anything else is parsed by Number
  for (let c = s.charCodeAt(i); c >= 48 && c <= 57 && i - from < 15; c = s.charCodeAt(++i))
    v = v * 10 + (c - 48);
  if (i === from || (i < s.length && s.charCodeAt(i) !== BAR)) {
    i = s.indexOf(SEP, from);
    if (i < 0) i = s.length;
    v = Number(s.slice(from, i));
  }
  at = i + 1;
  return v;
}

/** The length-prefixed string at `at`; moves past it and its '|'. */
function readStr(s: string): string {
  const n = readNum(s);
  const v = s.slice(at, at + n);
  at += n + 1;
  return v;
}

/** When the record expires: its leading number. */
export function recordExpiresAt(s: string): number {
  at = 0;
  return readNum(s);
}

/**
 * A copy of `s` that keeps nothing else alive. A slice of 13 characters or more is a view (V8's
 * SlicedString) that would keep the whole encoded record alive: a limit key a settlement adds to the
 * store's state (memory-settle.ts) outlives the record. Flattening a concatenation copies.
 */
function own(s: string): string {
  return s.length < 13 ? s : `${s} `.slice(0, -1);
}

export function decodeRecord(s: string): { reservation: Reservation; expiresAt: number } {
  at = 0;
  const expiresAt = readNum(s);
  const settled = readNum(s) === 1;
  const id = readStr(s);
  const record = readStr(s);
  const entries: ReservedEntry[] = [];
  while (at < s.length) {
    const index = readNum(s);
    const kind = readNum(s) as EntryKind;
    const capacity = readNum(s);
    const period = readNum(s);
    const cost = readNum(s);
    const windowEnd = readNum(s);
    const nextEnd = readNum(s);
    const key = own(readStr(s));
    entries.push({ index, key, kind, capacity, period, cost, windowEnd, nextEnd });
  }
  return { reservation: { id, record, entries, settled }, expiresAt };
}

/**
 * The settled mark of a record (memory-ledger.ts settled): its id and record kept, no entries,
 * expiring at `until` if that is sooner. Copied from the encoded string without decoding it.
 */
export function settledRecord(s: string, until: number): string {
  at = 0;
  const expiresAt = readNum(s);
  readNum(s); // settled
  const from = at;
  readStr(s); // id
  readStr(s); // record
  // the slice is copied by join: the mark holds no reference to the record it replaces
  return [num(Math.min(expiresAt, until)), 1, s.slice(from, Math.min(at - 1, s.length))].join(SEP);
}
