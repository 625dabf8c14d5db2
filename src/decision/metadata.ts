/**
 * The dynamic metadata every CheckResponse carries (Envoy stores it under the ext_authz filter's
 * namespace, envoy.filters.http.ext_authz, for access logs, later filters and ext_proc): one flat
 * Struct of strings and numbers, in this order, each field only when known:
 *
 *   decision              allow | reroute | deny | queued | cache (a deny answered from the deny cache)
 *   reason                the Decision's reason (ok, rerouted, rate-limited, never-fits, ...)
 *   <dimension>           each identity dimension, as tollgate keys it (identity/safeId: API keys are
 *                         their key_… hash id, long or unusual values a ~hash); a dimension named like
 *                         one of the fields here is left out
 *   model, routed_model   the model requested (as configured) and the one the call goes to
 *   prompt_tokens, reserved_tokens, cost_micros   what the call was charged at (numbers)
 *   limit                 the binding limit of a deny
 *   tollgate_reservation  the reservation to settle (allow, settlement on)
 *
 * `eachMetadataField` walks them without building anything: src/authz/grpc/translate.ts builds the
 * proto-loader Struct from it and wire-encode.ts writes the bytes, so both stay equal (test/wire.test.ts).
 */
import { safeId } from '../identity/identity.js';
import { RESERVATION_METADATA_KEY } from './reservation.js';
import type { Decision } from './types.js';

const FIXED = new Set([
  'decision',
  'reason',
  'model',
  'routed_model',
  'prompt_tokens',
  'reserved_tokens',
  'cost_micros',
  'limit',
  RESERVATION_METADATA_KEY,
]);

/** The `decision` field of `d`. */
export function decisionName(d: Decision): string {
  if (d.kind === 'allow') return d.reason === 'rerouted' ? 'reroute' : 'allow';
  if (d.reason === 'queued') return 'queued';
  return d.stats.cached ? 'cache' : 'deny';
}

/** Where the fields go: the lean encoder's Writer, or a proto-loader Struct being built. */
export interface MetadataSink {
  str(key: string, value: string): void;
  num(key: string, value: number): void;
}

/** Hands each metadata field of `d` to `out`, in the order above (nothing is allocated here). */
export function eachMetadataField(d: Decision, out: MetadataSink): void {
  const s = d.stats;
  out.str('decision', decisionName(d));
  if (d.reason) out.str('reason', d.reason);
  const id = s.identity;
  if (id)
    for (const dim in id) {
      const v = id[dim];
      if (v !== undefined && !FIXED.has(dim)) out.str(dim, safeId(v));
    }
  if (s.model !== undefined) out.str('model', s.model);
  if (s.chosenModel !== undefined) out.str('routed_model', s.chosenModel);
  if (s.promptTokens !== undefined) out.num('prompt_tokens', s.promptTokens);
  if (s.reservedTokens !== undefined) out.num('reserved_tokens', s.reservedTokens);
  if (s.micros !== undefined) out.num('cost_micros', s.micros);
  if (d.kind === 'deny' && s.limit !== undefined) out.str('limit', s.limit);
  if (d.kind === 'allow' && d.reservation) out.str(RESERVATION_METADATA_KEY, d.reservation);
}
