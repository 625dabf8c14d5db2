/**
 * Reservation ids: random and unguessable (128 bits), prefixed with the time they were made (base 36 ms)
 * so a settle of an id whose record is gone can tell "expired" from "never made here". Random bytes
 * come from a pooled buffer (one getRandomValues call per 256 ids).
 */
import { randomFillSync } from 'node:crypto';
import { keySlotTag } from '../store/slot.js';

const ID_BYTES = 16;
const POOL_IDS = 256;
const pool = Buffer.alloc(ID_BYTES * POOL_IDS);
let next = POOL_IDS;

export function newReservationId(now = Date.now()): string {
  if (next === POOL_IDS) {
    randomFillSync(pool);
    next = 0;
  }
  const start = next++ * ID_BYTES;
  return `${now.toString(36)}.${pool.toString('base64url', start, start + ID_BYTES)}`;
}

/**
 * An id for a Valkey Cluster: `<slot tag>:<id>`, the tag naming the slot its record is written in (the
 * slot of the plan's first key, store/slot.ts), so the settlement finds the record from the id alone.
 */
export function clusterReservationId(firstKey: string, now = Date.now()): string {
  return `${keySlotTag(firstKey)}:${newReservationId(now)}`;
}

/** The time an id says it was made (ms), or undefined when it is not one of ours. */
export function reservationIdTime(id: string): number | undefined {
  const m = /^(?:[0-9a-z]{1,4}:)?([0-9a-z]{1,11})\.[A-Za-z0-9_-]{22}$/.exec(id);
  if (!m) return undefined;
  const t = Number.parseInt(m[1], 36);
  return Number.isSafeInteger(t) ? t : undefined;
}

/** The upstream header and the dynamic-metadata field (namespace envoy.filters.http.ext_authz) carrying it. */
export const RESERVATION_HEADER = 'x-tollgate-reservation';
export const RESERVATION_METADATA_KEY = 'tollgate_reservation';
export const EXT_AUTHZ_NAMESPACE = 'envoy.filters.http.ext_authz';
