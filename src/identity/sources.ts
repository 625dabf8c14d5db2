/**
 * Identity sources that need more than a lookup: the client's IP address (`source_ip`) and the
 * treatment of API keys missing from the key map (`identity.unknown_keys`).
 */
import { isIP } from 'node:net';
import type { Config, SourceIpFrom } from '../config/types.js';

/** The identity value every API key missing from the key map shares under `unknown_keys: shared`. */
export const SHARED_UNKNOWN_KEY = 'key_unknown';

/**
 * A bare IP address, normalised (IPv4-mapped IPv6 → IPv4; IPv6 cut to its first `ipv6Prefix` bits and
 * written in one spelling as `<8 hex groups>/<bits>`); undefined unless it is one.
 */
export function normaliseIp(raw: string, ipv6Prefix = 128): string | undefined {
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
    return ipv6Network(v, ipv6Prefix); // one spelling per address (or network)
  }
  return v;
}

/** The /bits network of an IPv6 address (valid per isIP), as 8 full hex groups + "/bits". */
function ipv6Network(v: string, bits: number): string {
  let s = v.split('%')[0]; // zone index
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s); // trailing dotted IPv4
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number);
    s = `${s.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const out = groups.map((g, i) => {
    const keep = Math.max(0, Math.min(16, bits - i * 16));
    const n = Number.parseInt(g || '0', 16) & (keep === 0 ? 0 : (0xffff << (16 - keep)) & 0xffff);
    return n.toString(16);
  });
  return `${out.join(':')}/${bits}`;
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
  if (from.from === 'envoy') return sourceAddress ? normaliseIp(sourceAddress, from.ipv6Prefix) : undefined;
  const xff = headers['x-forwarded-for'];
  if (!xff) return undefined;
  const hops = xff.split(',');
  const i = hops.length - 1 - from.trustedHops;
  return i >= 0 ? normaliseIp(hops[i], from.ipv6Prefix) : undefined;
}

/** Whether an API key digest is in the key map (by its full digest or its key_<32 hex> id). */
export function knownKey(cfg: Config, digest: string): boolean {
  const e = cfg.keyMap?.entries;
  return !!e && (e.has(digest) || e.has(`key_${digest.slice(0, 32)}`));
}
