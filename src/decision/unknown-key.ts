/**
 * identity.unknown_keys: deny — a call presenting an API key that is not in the key map is refused
 * with 401 before anything else is done for it (no parsing, no counting, no store call, no state).
 * Calls without a key are not affected (their identity comes from the other sources). The key is read
 * as identity reads it (identity.ts apiKeyOf: the route's header first; Gemini's `?key=` from `path`).
 */
import type { Config } from '../config/types.js';
import { type KeyHeader, requestKeyDigest } from '../identity/identity.js';
import { knownKey } from '../identity/sources.js';
import type { DenyDecision } from './types.js';

const BODY = JSON.stringify({
  error: {
    message: 'Incorrect API key provided: this key is not known to the rate limiter.',
    type: 'invalid_request_error',
    code: 'invalid_api_key',
    param: null,
  },
});

/**
 * Under `unknown_keys: deny`: the 401 for an unknown key, or the key's digest (null: no key) for
 * identity resolution to reuse. Under other settings: undefined (identity computes the digest itself).
 */
export function unknownKeyGate(
  cfg: Config,
  headers: Record<string, string>,
  keyHeader?: KeyHeader,
  path?: string,
): { denied: DenyDecision } | { digest: string | null } | undefined {
  if (cfg.keyMap?.unknownKeys !== 'deny') return undefined;
  const digest = requestKeyDigest(cfg, headers, keyHeader, path);
  if (digest === null || knownKey(cfg, digest)) return { digest };
  return {
    denied: {
      kind: 'deny',
      reason: 'unknown-key',
      httpStatus: 401,
      headers: { 'content-type': 'application/json' },
      body: BODY,
      stats: {},
    },
  };
}
