/**
 * Identity sources that need more than a lookup: the client's IP address (`source_ip`) and the
 * treatment of API keys missing from the key map (`identity.unknown_keys`).
 */
import { isIP } from 'node:net';
import type { Config, SourceIpFrom } from './config/types.js';

/** The identity value every API key missing from the key map shares under `unknown_keys: shared`. */
export const SHARED_UNKNOWN_KEY = 'key_unknown';

/** A bare IP address, normalised (IPv4-mapped IPv6 → IPv4, lower case); undefined unless it is one. */
export function normaliseIp(raw: string): string | undefined {
  let v = raw.trim();
  if (v.startsWith('[')) {
    const end = v.indexOf(']'); // "[v6]:port"
    v = end > 0 ? v.slice(1, end) : v;
  } else if (v.indexOf(':') === v.lastIndexOf(':') && v.includes('.')) v = v.split(':')[0]; // "v4:port"
  const kind = isIP(v);
  if (kind === 0) return undefined;
  if (kind === 6) {
    v = v.toLowerCase();
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(v);
    if (mapped) return mapped[1];
  }
  return v;
}

/**
 * The client address: Envoy's `attributes.source.address` (the downstream peer), or the entry of
 * `x-forwarded-for` that the nearest trusted proxy wrote: with `trustedHops` = N, the (N+1)-th from
 * the right (Envoy's xff_num_trusted_hops). Entries left of it are whatever the client sent and are
 * never used. Fewer entries than that, or not an IP address: no value (the next source decides).
 */
export function sourceIp(
  from: SourceIpFrom,
  headers: Record<string, string>,
  sourceAddress: string | undefined,
): string | undefined {
  if (from.from === 'envoy') return sourceAddress ? normaliseIp(sourceAddress) : undefined;
  const xff = headers['x-forwarded-for'];
  if (!xff) return undefined;
  const hops = xff.split(',');
  const i = hops.length - 1 - from.trustedHops;
  return i >= 0 ? normaliseIp(hops[i]) : undefined;
}

/** Whether an API key digest is in the key map (by its full digest or its key_<32 hex> id). */
export function knownKey(cfg: Config, digest: string): boolean {
  const e = cfg.keyMap?.entries;
  return !!e && (e.has(digest) || e.has(`key_${digest.slice(0, 32)}`));
}
