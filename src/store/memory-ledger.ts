/**
 * The in-memory store's response-phase state: concurrency slots (per key, the reservation ids holding
 * one and their lease ends) and reservation records (until settled, then kept as settled until their
 * TTL). Mirrors lua/includes/slots.lua and the record the check script writes.
 */
import { CONCURRENT_RETRY_MAX_MS, type Reservation } from '../policy/plan-types.js';

/**
 * Distinct limit-key strings kept for sharing between records (name()): ~100 B each, so at most
 * ~1.6 MB even when no record shares one (many tenants, few records each).
 */
const NAMES_MAX = 16_384;

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
    for (const e of reservation.entries) e.key = this.name(e.key);
    this.records.set(key, { reservation, expiresAt });
  }

  /**
   * One string per limit key for every record that debited it. A plan builds its keys afresh for each
   * call, so each record kept its own copies (a flattened cons string and its contents per key). An
   * in-process loop of 20,000 three-limit checks held 23.9 MB of heap with this, 26.5 MB without:
   * less live heap for each full GC to mark. Cleared at NAMES_MAX: records keep the strings they
   * have, later ones share new ones.
   */
  private name(k: string): string {
    const s = this.names.get(k);
    if (s !== undefined) return s;
    if (this.names.size >= NAMES_MAX) this.names.clear();
    this.names.set(k, k);
    return k;
  }

  private readonly names = new Map<string, string>();

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
