/** Validation of identity.unknown_keys and the source_ip identity source (see src/identity-sources.ts). */
import type { SourceIpFrom, UnknownKeys } from './types.js';

interface Check {
  fail(path: string, expected: string, got?: unknown): void;
}

const SOURCE_IP = 'envoy (attributes.source.address) or { xff_trusted_hops: N } (x-forwarded-for)';

/** `source_ip: envoy` or `source_ip: { xff_trusted_hops: N }` (N trusted proxies in front). */
export function parseSourceIp(c: Check, path: string, v: unknown): SourceIpFrom | undefined {
  if (v === 'envoy') return { from: 'envoy' };
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    const n = o.xff_trusted_hops;
    if (keys.length === 1 && typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 16)
      return { from: 'xff', trustedHops: n };
    if (keys.length === 1 && keys[0] === 'xff_trusted_hops') {
      c.fail(`${path}.xff_trusted_hops`, 'an integer from 0 to 16', n);
      return undefined;
    }
  }
  c.fail(path, SOURCE_IP, v);
  return undefined;
}

export function parseUnknownKeys(c: Check, path: string, v: unknown): UnknownKeys | undefined {
  if (v === 'own' || v === 'shared' || v === 'deny') return v;
  c.fail(path, 'one of own, shared, deny', v);
  return undefined;
}
