/**
 * The in-memory store's response-phase state: concurrency slots (per key, the reservation ids holding
 * one and their lease ends) and reservation records (until settled, then kept as settled until their
 * TTL). Mirrors lua/includes/slots.lua and the record the check script writes. Each record is held
 * as one string (memory-record.ts), its expiry first.
 */
import { CONCURRENT_RETRY_MAX_MS, type Reservation } from '../policy/plan-types.js';
import { decodeRecord, encodeRecord, recordExpiresAt, settledRecord } from './memory-record.js';

export class MemoryLedger {
  private readonly slots = new Map<string, Map<string, number>>();
  /** Reservation key → the record encoded (memory-record.ts); insertion order is age order. */
  private readonly records = new Map<string, string>();

  /** Slots held on `key` now (expired leases dropped) and the earliest lease end (0 when none). */
  slotsRead(key: string, now: number): { held: number; first: number } {
    const m = this.slots.get(key);
    if (!m) return { held: 0, first: 0 };
    let first = 0;
    for (const [id, end] of m) {
      if (end <= now) m.delete(id);
      else if (first === 0 || end < first) first = end;
    }
    if (m.size === 0) this.slots.delete(key);
    return { held: m.size, first };
  }

  static slotsRetry(first: number, now: number): number {
    return Math.min(CONCURRENT_RETRY_MAX_MS, Math.max(1, first - now));
  }

  slotsTake(key: string, id: string, leaseEnd: number): void {
    const m = this.slots.get(key);
    if (m) m.set(id, leaseEnd);
    else this.slots.set(key, new Map([[id, leaseEnd]]));
  }

  /** The reservation ids holding a slot on `key` and their lease ends. */
  slotsHeld(key: string): [string, number][] {
    return [...(this.slots.get(key) ?? [])];
  }

  /** Release `id`'s slot on `key`; returns the slots still held. */
  slotsRelease(key: string, id: string, now: number): number {
    this.slots.get(key)?.delete(id);
    return this.slotsRead(key, now).held;
  }

  /**
   * Keep a reservation record. At `max` records the oldest is dropped: its reservation then stands as
   * charged (never an under-charge) and its slots free at their lease end.
   */
  record(key: string, reservation: Reservation, expiresAt: number, max: number): void {
    if (this.records.size < max) this.oldest = undefined;
    while (this.records.size >= max && this.dropOldest()) this.dropped++;
    this.records.set(key, encodeRecord(reservation, expiresAt));
  }

  /**
   * Where the oldest record is, while the ledger is at its bound. `records.keys()` afresh on every
   * call would walk the holes that deleted entries leave at the front of V8's table until it is
   * compacted: 7–35 µs per record at 20,000 (an in-process loop); one iterator kept from drop to drop
   * starts where the last one stopped. Dropped below the bound: an idle iterator would keep alive every
   * table the Map has since outgrown.
   */
  private oldest?: Iterator<string>;

  private dropOldest(): boolean {
    let next = this.oldest?.next();
    if (!next || next.done) {
      this.oldest = this.records.keys();
      next = this.oldest.next();
      if (next.done) return false;
    }
    this.records.delete(next.value);
    return true;
  }

  /** Records dropped at the bound. */
  dropped = 0;

  /** A settled record is kept briefly (a repeat answers 'duplicate'), then forgotten. */
  settled(key: string, until: number): void {
    const s = this.records.get(key);
    if (s !== undefined) this.records.set(key, settledRecord(s, until));
  }

  /** The record kept under `key`, decoded (a new object on every read), unless it has expired. */
  reservation(key: string, now: number): Reservation | undefined {
    const s = this.records.get(key);
    if (s === undefined) return undefined;
    if (recordExpiresAt(s) <= now) {
      this.records.delete(key);
      return undefined;
    }
    return decodeRecord(s).reservation;
  }

  /** Drop expired records and leases. */
  sweep(now: number): void {
    for (const [k, s] of this.records) if (recordExpiresAt(s) <= now) this.records.delete(k);
    for (const k of [...this.slots.keys()]) this.slotsRead(k, now);
  }

  get size(): number {
    return this.records.size + this.slots.size;
  }
}
