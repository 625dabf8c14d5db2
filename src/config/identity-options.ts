/** Validation of identity.unknown_keys and the source_ip identity source (see src/identity-sources.ts). */
import type { SourceIpFrom, UnknownKeys } from './types.js';

interface Check {
  fail(path: string, expected: string, got?: unknown): void;
}

const SOURCE_IP =
  'envoy (attributes.source.address) or a mapping { xff_trusted_hops: N (x-forwarded-for; omit for envoy), ipv6_prefix: 64 }';
/** One IPv6 client usually holds a whole /64: by default its addresses are one client. */
export const DEFAULT_IPV6_PREFIX = 64;

/** `source_ip: envoy` or `source_ip: { xff_trusted_hops?: N, ipv6_prefix?: bits }`. */
export function parseSourceIp(c: Check, path: string, v: unknown): SourceIpFrom | undefined {
  if (v === 'envoy') return { from: 'envoy', ipv6Prefix: DEFAULT_IPV6_PREFIX };
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    c.fail(path, SOURCE_IP, v);
    return undefined;
  }
  const o = v as Record<string, unknown>;
  let ok = true;
  for (const k of Object.keys(o))
    if (k !== 'xff_trusted_hops' && k !== 'ipv6_prefix') {
      c.fail(`${path}.${k}`, 'xff_trusted_hops or ipv6_prefix', k);
      ok = false;
    }
  const int = (k: string, max: number, def: number | undefined) => {
    const n = o[k];
    if (n === undefined) return def;
    if (typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= max) return n;
    c.fail(`${path}.${k}`, `an integer from 0 to ${max}`, n);
    ok = false;
    return undefined;
  };
  const hops = int('xff_trusted_hops', 16, undefined);
  const ipv6Prefix = int('ipv6_prefix', 128, DEFAULT_IPV6_PREFIX) ?? DEFAULT_IPV6_PREFIX;
  if (!ok) return undefined;
  return hops === undefined ? { from: 'envoy', ipv6Prefix } : { from: 'xff', trustedHops: hops, ipv6Prefix };
}

export function parseUnknownKeys(c: Check, path: string, v: unknown): UnknownKeys | undefined {
  if (v === 'own' || v === 'shared' || v === 'deny') return v;
  c.fail(path, 'one of own, shared, deny', v);
  return undefined;
}
