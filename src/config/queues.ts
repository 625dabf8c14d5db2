/**
 * queues.<name>: the queue tier's bounds. A queued entry holds the request body in Valkey, so every
 * queue is bounded in entries AND bytes, and each tenant may hold only a share of both:
 *   max_length    entries (default 10000)
 *   max_bytes     bytes of queued entries (default 64 MiB; "64MiB", "512KiB", "1GiB" or a number)
 *   tenant_share  the share of max_length and of max_bytes one tenant may hold (default 25%;
 *                 100% = no per-tenant bound)
 */
import type { QueueConfig } from './types.js';

interface Check {
  fail(path: string, expected: string, got?: unknown): void;
  obj(path: string, v: unknown): Record<string, unknown> | undefined;
  keys(path: string, o: Record<string, unknown>, allowed: readonly string[]): void;
  int(path: string, v: unknown, min: number, max?: number): number | undefined;
}

export const DEFAULT_QUEUE_MAX_LENGTH = 10_000;
export const DEFAULT_QUEUE_MAX_BYTES = 64 * 1024 * 1024;
export const DEFAULT_TENANT_SHARE = 0.25;
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** 1048576, "1MiB", "512KiB", "2GiB" → bytes; undefined otherwise. */
export function parseBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && v > 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)$/.exec(v.trim());
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * UNITS[m[2]]);
  return n > 0 ? n : undefined;
}

function share(c: Check, path: string, v: unknown): number | undefined {
  let n: number | undefined;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
    if (m) n = Number(m[1]) / 100;
  }
  if (n !== undefined && n > 0 && n <= 1) return n;
  c.fail(path, 'a share like 25% (100% = no per-tenant bound)', v);
  return undefined;
}

export function parseQueues(c: Check, raw: unknown): Map<string, QueueConfig> {
  const queues = new Map<string, QueueConfig>();
  if (raw === undefined) return queues;
  const qs = c.obj('queues', raw);
  if (!qs) return queues;
  for (const [name, v] of Object.entries(qs)) {
    const p = `queues.${name}`;
    if (!NAME.test(name)) c.fail(p, 'a queue name of 1-64 letters, digits, "_", "-", "."', name);
    const o = c.obj(p, v ?? {});
    if (!o) continue;
    c.keys(p, o, ['max_length', 'max_bytes', 'tenant_share']);
    const maxLength =
      o.max_length === undefined
        ? DEFAULT_QUEUE_MAX_LENGTH
        : c.int(`${p}.max_length`, o.max_length, 1, 100_000_000);
    let maxBytes: number | undefined = DEFAULT_QUEUE_MAX_BYTES;
    if (o.max_bytes !== undefined) {
      maxBytes = parseBytes(o.max_bytes);
      if (maxBytes === undefined || maxBytes < 1024 || maxBytes > 2 ** 50) {
        c.fail(`${p}.max_bytes`, 'a size from 1KiB, like 67108864, "64MiB" or "1GiB"', o.max_bytes);
        maxBytes = undefined;
      }
    }
    const s =
      o.tenant_share === undefined ? DEFAULT_TENANT_SHARE : share(c, `${p}.tenant_share`, o.tenant_share);
    if (maxLength === undefined || maxBytes === undefined || s === undefined) continue;
    queues.set(name, {
      name,
      maxLength,
      maxBytes,
      tenantMaxEntries: Math.max(1, Math.floor(maxLength * s)),
      tenantMaxBytes: Math.max(1, Math.floor(maxBytes * s)),
    });
  }
  return queues;
}
