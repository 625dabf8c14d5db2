/**
 * Who is calling: each identity dimension (tenant, team, org, user, plan, ...) from the first source
 * present. API keys are hashed (HMAC-SHA256 with a secret when configured) and never kept raw.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Config, IdentitySource } from './config/types.js';

export interface RequestView {
  path: string;
  headers: Record<string, string>;
  /** Envoy metadata_context.filter_metadata, already converted from protobuf Struct to plain JSON. */
  metadata?: Record<string, unknown>;
}

export type Identity = Record<string, string | undefined>;

/** The API key a client sent, if any: Authorization: Bearer …, x-api-key, api-key. */
export function apiKeyOf(headers: Record<string, string>): string | undefined {
  const auth = headers.authorization;
  if (auth) {
    const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  return headers['x-api-key'] || headers['api-key'] || undefined;
}

export function hashApiKey(key: string, secret: string): string {
  const h = secret ? createHmac('sha256', secret) : createHash('sha256');
  return `key_${h.update(key).digest('hex').slice(0, 32)}`;
}

function fromSource(src: IdentitySource, req: RequestView, secret: string): string | undefined {
  if ('header' in src) {
    const v = req.headers[src.header];
    return v ? v : undefined;
  }
  if ('api_key' in src) {
    const k = apiKeyOf(req.headers);
    return k ? hashApiKey(k, secret) : undefined;
  }
  if ('default' in src) return src.default;
  if ('path_segment' in src) {
    const seg = req.path.split('?')[0].split('/').filter(Boolean)[src.path_segment];
    return seg ? decodeURIComponentSafe(seg) : undefined;
  }
  let cur: unknown = req.metadata?.[src.metadata.filter];
  for (const p of src.metadata.path) {
    if (!cur || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return typeof cur === 'string' || typeof cur === 'number' ? String(cur) : undefined;
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Resolve every configured dimension. `tenant` falls back to "anonymous"; others stay undefined. */
export function resolveIdentity(cfg: Config, req: RequestView): Identity {
  const out: Identity = {};
  for (const [dim, sources] of Object.entries(cfg.identity)) {
    let v: string | undefined;
    for (const s of sources) {
      v = fromSource(s, req, cfg.apiKeySecret);
      if (v !== undefined) break;
    }
    out[dim] = v ?? (dim === 'tenant' ? 'anonymous' : undefined);
  }
  return out;
}

const SAFE = /^[A-Za-z0-9_.@-]{1,64}$/;

/**
 * An id made safe for use inside a Valkey key: short ids of a safe alphabet stay readable, anything
 * else (colons, braces, newlines, NUL, long text) becomes "~" + a hash. "~" is outside the safe
 * alphabet, so a readable id can never equal a hashed one, and ":" never appears inside a part.
 */
export function safeId(id: string): string {
  if (SAFE.test(id)) return id;
  return `~${createHash('sha256').update(id).digest('base64url').slice(0, 27)}`;
}

/** A short, non-reversible tag for logs. */
export function logTag(id: string | undefined): string | undefined {
  return id === undefined ? undefined : createHash('sha256').update(id).digest('hex').slice(0, 12);
}
