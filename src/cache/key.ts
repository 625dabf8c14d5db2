/**
 * What a call is, for the cache: the exact key (a hash of the scope, the configured model and the
 * normalized request) and the semantic parts (the same model, system prompt and tools, and the last
 * user turn's text). Pure: the request body is re-read here (JSON.parse), only when the cache is on.
 *
 * Normalized: every field of the body that can change the answer (messages/system/tools/sampling
 * parameters and anything unknown), minus the ones that cannot: `stream`, `stream_options`, `user`,
 * `metadata`, `store`, `service_tier`, request and cache ids. Object keys are sorted.
 */
import { createHash } from 'node:crypto';

/** The dialects whose answers are cached (JSON and SSE are both reassembled and served). */
export const CACHE_DIALECTS: ReadonlySet<string> = new Set(['openai.chat', 'anthropic.messages']);

const IGNORED = new Set([
  'model',
  'stream',
  'stream_options',
  'user',
  'metadata',
  'store',
  'service_tier',
  'safety_identifier',
  'prompt_cache_key',
  'prompt_cache_retention',
  'request_id',
]);

export interface CallKey {
  /** sha256 hex of the exact request. */
  exact: string;
  /** sha256 hex of (model, system, tools, earlier turns' shape): entries comparable by embedding. */
  family: string;
  /** The last user turn's text ('' when it has none). */
  lastUser: string;
  stream: boolean;
}

/** JSON with sorted object keys (depth-capped: the body was already parsed once, bounded). */
export function canonical(v: unknown, depth = 0): string {
  if (depth > 64) throw new Error('too deep');
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map((x) => canonical(x, depth + 1)).join(',')}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(o[k], depth + 1)}`).join(',')}}`;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/** The key of a call in `dialect` to `model` (the configured name), or undefined when not cacheable. */
export function callKey(dialect: string, model: string, body: string | Buffer): CallKey | undefined {
  if (!CACHE_DIALECTS.has(dialect)) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return undefined;
  const o = parsed as Record<string, unknown>;
  const kept: Record<string, unknown> = {};
  for (const k of Object.keys(o)) if (!IGNORED.has(k)) kept[k] = o[k];
  const messages = Array.isArray(o.messages) ? (o.messages as unknown[]) : undefined;
  if (!messages || messages.length === 0) return undefined;
  try {
    const exact = sha(canonical({ d: dialect, m: model, b: kept }));
    const last = messages[messages.length - 1] as Record<string, unknown> | undefined;
    const lastUser = last && last.role === 'user' ? textOf(last.content) : '';
    const rest: Record<string, unknown> = { ...kept, messages: messages.slice(0, -1) };
    const family = sha(canonical({ d: dialect, m: model, b: rest }));
    return { exact, family, lastUser, stream: o.stream === true };
  } catch {
    return undefined;
  }
}

/** Text of a message's content: a string, or its text parts joined. */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  const out: string[] = [];
  for (const p of content) {
    if (typeof p === 'string') out.push(p);
    else if (p && typeof p === 'object' && typeof (p as { text?: unknown }).text === 'string')
      out.push((p as { text: string }).text);
  }
  return out.join('\n');
}

/**
 * The scope an answer belongs to: its kind (the dimension names, or "global") and id (a hash of the
 * values), or undefined when a dimension is missing (such calls are neither served nor filled). A
 * tenant nobody named ("anonymous": no identity source matched) is missing too: unidentified callers
 * never share answers.
 */
export function scopeOf(
  dims: readonly string[],
  id: Readonly<Record<string, string | undefined>>,
): { kind: string; id: string } | undefined {
  if (dims.length === 0) return { kind: 'global', id: 'global' };
  const pairs: string[] = [];
  for (const d of dims) {
    const v = id[d];
    if (v === undefined || (d === 'tenant' && v === 'anonymous')) return undefined;
    pairs.push(`${d}=${v}`);
  }
  return scopeFromPairs(pairs);
}

/** `tenant=acme` (the purge CLI's words) → the scope's kind and id. */
export function scopeFromPairs(pairs: string[]): { kind: string; id: string } {
  const sorted = [...pairs].sort();
  const kind = sorted.map((p) => p.slice(0, p.indexOf('='))).join('+');
  return { kind, id: `${kind}.${sha(sorted.join('\u0000')).slice(0, 32)}` };
}
