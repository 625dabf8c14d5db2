/**
 * `tollgate replay`'s input: recorded calls, one JSON object per line (blank lines skipped), in any of
 * three shapes, each with a time: `time` or `ts`, an ISO 8601 string or epoch milliseconds (a number
 * or a numeric string).
 *
 *  1. A request:      {"time": …, "headers": {…}, "path": "/v1/chat/completions", "body": {…} | "…"}
 *                     decided exactly as Envoy's Check would be (path defaults to /v1/chat/completions).
 *  2. Token counts:   {"time": …, "headers": {…}, "model": "gpt-4o", "prompt_tokens": 812, "output_tokens": 95}
 *                     charged exactly those tokens (no tokenizer, no max_tokens reservation).
 *  3. A usage export stream entry (docs/settlement.md): {"ts": "…", "model": …, "prompt": "812",
 *                     "output": "95", "dim.tenant": "acme", …}: token counts with the identity given.
 *  Token counts name their identity by `headers` (resolved as a request's would be), by `dim.<name>`
 *  fields or by an `identity` object (dimension → value, API keys as their `key_…` id).
 */

export interface RequestCall {
  kind: 'request';
  /** ms since the epoch */
  at: number;
  line: number;
  path: string;
  headers: Record<string, string>;
  body: string;
}

export interface CountsCall {
  kind: 'counts';
  at: number;
  line: number;
  model: string;
  prompt: number;
  output: number;
  /** Headers to resolve the identity from (when no dimensions are given). */
  headers?: Record<string, string>;
  /** Identity dimensions given outright (dim.<name> fields or `identity`). */
  identity?: Record<string, string>;
}

export type ReplayCall = RequestCall | CountsCall;

export class ReplayInputError extends Error {}

function timeOf(o: Record<string, unknown>, line: number): number {
  const t = o.time ?? o.ts;
  let ms = Number.NaN;
  if (typeof t === 'number') ms = t;
  else if (typeof t === 'string') ms = /^\d+(\.\d+)?$/.test(t) ? Number(t) : Date.parse(t);
  if (!Number.isFinite(ms))
    throw new ReplayInputError(`line ${line}: "time" (or "ts") must be an ISO 8601 time or epoch ms`);
  return Math.floor(ms);
}

function count(v: unknown, name: string, line: number): number {
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0)
    throw new ReplayInputError(`line ${line}: "${name}" must be a whole number of tokens`);
  return n;
}

function stringMap(v: unknown, name: string, line: number, lower: boolean): Record<string, string> {
  if (v === undefined) return {};
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new ReplayInputError(`line ${line}: "${name}" must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string' && typeof x !== 'number')
      throw new ReplayInputError(`line ${line}: ${name}.${k} must be a string`);
    out[lower ? k.toLowerCase() : k] = String(x);
  }
  return out;
}

/** One line's call. */
export function parseCall(text: string, line: number): ReplayCall {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw new ReplayInputError(`line ${line}: not JSON`);
  }
  if (!o || typeof o !== 'object' || Array.isArray(o))
    throw new ReplayInputError(`line ${line}: expected a JSON object`);
  const rec = o as Record<string, unknown>;
  const at = timeOf(rec, line);
  const headers = stringMap(rec.headers, 'headers', line, true);
  if (rec.body !== undefined) {
    const body = typeof rec.body === 'string' ? rec.body : JSON.stringify(rec.body);
    const path = typeof rec.path === 'string' ? rec.path : '/v1/chat/completions';
    return { kind: 'request', at, line, path, headers, body };
  }
  if (typeof rec.model !== 'string' || rec.model === '')
    throw new ReplayInputError(`line ${line}: needs a "body", or a "model" with token counts`);
  const prompt = count(rec.prompt_tokens ?? rec.prompt, 'prompt_tokens', line);
  const output = count(rec.output_tokens ?? rec.output ?? 0, 'output_tokens', line);
  const identity = stringMap(rec.identity, 'identity', line, false);
  for (const [k, v] of Object.entries(rec))
    if (k.startsWith('dim.') && typeof v === 'string') identity[k.slice(4)] = v;
  const call: CountsCall = { kind: 'counts', at, line, model: rec.model, prompt, output };
  if (Object.keys(identity).length) call.identity = identity;
  else call.headers = headers;
  return call;
}

/** Every call of a JSON Lines text, ordered by time (calls at the same time keep their order). */
export function parseCalls(text: string): ReplayCall[] {
  const calls: ReplayCall[] = [];
  text.split('\n').forEach((l, i) => {
    if (l.trim()) calls.push(parseCall(l, i + 1));
  });
  return calls.sort((a, b) => a.at - b.at);
}
