/**
 * The in-memory store's response-phase state: concurrency slots (per key, the reservation ids holding
 * one and their lease ends) and reservation records (until settled, then kept as settled until their
 * TTL). Mirrors lua/includes/slots.lua and the record the check script writes.
 */
import { CONCURRENT_RETRY_MAX_MS, type Reservation } from '../policy/plan-types.js';

interface Held {
  reservation: Reservation;
  expiresAt: number;
}

export class MemoryLedger {
  private readonly slots = new Map<string, Map<string, number>>();
  private readonly records = new Map<string, Held>();

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
    while (this.records.size >= max) {
      const oldest = this.records.keys().next().value as string;
      this.records.delete(oldest);
      this.dropped++;
    }
    this.records.set(key, { reservation, expiresAt });
  }

  /** Records dropped at the bound. */
  dropped = 0;

  /** A settled record is kept briefly (a repeat answers 'duplicate'), then forgotten. */
  settled(key: string, until: number): void {
    const h = this.records.get(key);
    if (!h) return;
    h.reservation = { ...h.reservation, settled: true, entries: [] };
    h.expiresAt = Math.min(h.expiresAt, until);
  }

  reservation(key: string, now: number): Reservation | undefined {
    const h = this.records.get(key);
    if (!h) return undefined;
    if (h.expiresAt <= now) {
      this.records.delete(key);
      return undefined;
    }
    return h.reservation;
  }

  /** Drop expired records and leases. */
  sweep(now: number): void {
    for (const [k, h] of this.records) if (h.expiresAt <= now) this.records.delete(k);
    for (const k of [...this.slots.keys()]) this.slotsRead(k, now);
  }

  get size(): number {
    return this.records.size + this.slots.size;
  }
}
