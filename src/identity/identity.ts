/**
 * Who is calling: each identity dimension (tenant, team, org, user, plan, ...) from the first source
 * present. API keys are hashed (HMAC-SHA256 with a secret when configured) and never kept raw.
 */
import { createHash, createHmac } from 'node:crypto';
import type { Config, IdentitySource } from '../config/types.js';
import { knownKey, SHARED_UNKNOWN_KEY, sourceIp } from './sources.js';

/**
 * The header a provider authenticates a dialect's calls with (Anthropic x-api-key, Azure api-key,
 * Gemini x-goog-api-key — or, without that header, Gemini's `?key=` query parameter).
 */
export type KeyHeader = 'authorization' | 'x-api-key' | 'api-key' | 'x-goog-api-key';
/** The fallbacks every dialect reads when its own key is absent (x-goog-api-key only on Gemini's route). */
const KEY_HEADERS: readonly KeyHeader[] = ['authorization', 'x-api-key', 'api-key'];

export interface RequestView {
  path: string;
  headers: Record<string, string>;
  /** Envoy metadata_context.filter_metadata, already converted from protobuf Struct to plain JSON. */
  metadata?: Record<string, unknown>;
  /** Envoy's attributes.source.address (the downstream peer's IP), when sent. */
  sourceAddress?: string;
  /** The API key's digest when already computed (null: no key); undefined = compute it here. */
  keyDigest?: string | null;
  /** The API-key header of the call's dialect: read first, so a client cannot outrank it with another. */
  keyHeader?: KeyHeader;
}

export type Identity = Record<string, string | undefined>;

function keyFrom(headers: Record<string, string>, h: KeyHeader): string | undefined {
  const v = headers[h];
  if (!v) return undefined;
  if (h !== 'authorization') return v;
  return /^\s*Bearer\s+(\S+)\s*$/i.exec(v)?.[1];
}

/**
 * The `key` query parameter of a path (Gemini's alternative to x-goog-api-key), percent-decoded. Sent
 * more than once, the values joined with "," (as Envoy joins a repeated header): one key that is none
 * of them, so no single one of them is charged while another authenticates.
 */
export function queryKeyOf(path: string | undefined): string | undefined {
  const q = path?.indexOf('?') ?? -1;
  if (q < 0) return undefined;
  const query = path!.slice(q + 1).split('#')[0];
  if (!query.includes('key=')) return undefined; // the common case: no parse
  const values = new URLSearchParams(query).getAll('key').filter((v) => v.length > 0);
  return values.length > 0 ? values.join(',') : undefined;
}

/**
 * The API key a client sent: the dialect's own header first (`first`; for Gemini's x-goog-api-key,
 * then the path's `?key=`), then the others (Authorization: Bearer …, x-api-key, api-key). On the
 * Anthropic route the provider authenticates x-api-key, so a Bearer token there must not decide whose
 * budget is spent.
 */
export function apiKeyOf(
  headers: Record<string, string>,
  first: KeyHeader = 'authorization',
  path?: string,
): string | undefined {
  const k = keyFrom(headers, first) ?? (first === 'x-goog-api-key' ? queryKeyOf(path) : undefined);
  if (k) return k;
  for (const h of KEY_HEADERS) {
    if (h === first) continue;
    const v = keyFrom(headers, h);
    if (v) return v;
  }
  return undefined;
}

/** Full hex digest of an API key: HMAC-SHA256 with the secret, or plain SHA-256 without one. */
export function apiKeyDigest(key: string, secret: string): string {
  const h = secret ? createHmac('sha256', secret) : createHash('sha256');
  return h.update(key).digest('hex');
}

/** The identity value an API key becomes: "key_" + 32 hex digits of its digest. */
export function hashApiKey(key: string, secret: string): string {
  return `key_${apiKeyDigest(key, secret).slice(0, 32)}`;
}

interface Ctx {
  req: RequestView;
  cfg: Config;
  digest?: string | null;
}

/** The request's API key digest (null: it sent none). `path` is read for Gemini's `?key=` only. */
export function requestKeyDigest(
  cfg: Config,
  headers: Record<string, string>,
  keyHeader?: KeyHeader,
  path?: string,
): string | null {
  const k = apiKeyOf(headers, keyHeader, path);
  return k ? apiKeyDigest(k, cfg.apiKeySecret) : null;
}

/** The request's API key digest, computed at most once per request. */
function digestOf(ctx: Ctx): string | undefined {
  if (ctx.digest === undefined)
    ctx.digest =
      ctx.req.keyDigest !== undefined
        ? ctx.req.keyDigest
        : requestKeyDigest(ctx.cfg, ctx.req.headers, ctx.req.keyHeader, ctx.req.path);
  return ctx.digest ?? undefined;
}

function fromSource(src: IdentitySource, ctx: Ctx): string | undefined {
  const req = ctx.req;
  if ('header' in src) {
    const v = req.headers[src.header];
    return v ? v : undefined;
  }
  if ('api_key' in src) {
    const d = digestOf(ctx);
    if (!d) return undefined;
    // unknown_keys: shared — every key missing from the key map is one tenant, not one each
    if (ctx.cfg.keyMap?.unknownKeys === 'shared' && !knownKey(ctx.cfg, d)) return SHARED_UNKNOWN_KEY;
    return `key_${d.slice(0, 32)}`;
  }
  if ('source_ip' in src) return sourceIp(src.source_ip, req.headers, req.sourceAddress);
  if ('key_map' in src) {
    const d = digestOf(ctx);
    const entries = ctx.cfg.keyMap?.entries;
    if (!d || !entries) return undefined;
    return (entries.get(d) ?? entries.get(`key_${d.slice(0, 32)}`))?.[src.key_map];
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

/**
 * Resolve every configured dimension: the first source with a value wins; a value outside the
 * dimension's `values` becomes its `default`. `tenant` falls back to "anonymous"; others stay undefined.
 */
export function resolveIdentity(cfg: Config, req: RequestView): Identity {
  const out: Identity = {};
  const ctx: Ctx = { req, cfg };
  for (const dim in cfg.identity) {
    const d = cfg.identity[dim];
    let v: string | undefined;
    for (const s of d.sources) {
      v = fromSource(s, ctx);
      if (v !== undefined) break;
    }
    if (d.values && (v === undefined || !d.values.has(v))) v = d.fallback;
    else if (v === undefined) v = d.fallback;
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

const tags = new Map<string, string>();

/** A short, non-reversible tag for logs (memoized: tenants repeat; the memo is bounded). */
export function logTag(id: string | undefined): string | undefined {
  if (id === undefined) return undefined;
  let t = tags.get(id);
  if (t === undefined) {
    t = createHash('sha256').update(id).digest('hex').slice(0, 12);
    if (tags.size >= 10_000) tags.clear();
    tags.set(id, t);
  }
  return t;
}
