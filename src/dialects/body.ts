/**
 * Request body → ParsedCall, shared by the decision pipeline (small bodies, on the event loop) and the
 * token workers (large bodies, parsed and counted off the event loop).
 */
import { GEMINI_DIALECT, parseGeminiCall } from './gemini.js';
import { parseCall } from './parse.js';
import type { PathFacts } from './route.js';
import { type Dialect, isParseError, type ParsedCall, type ParseError } from './types.js';

/** The body as text: raw bytes (pack_as_bytes) are UTF-8. */
export function bodyText(body: Uint8Array | string): string {
  if (typeof body === 'string') return body;
  return Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
}

/**
 * Parse a request body of `dialect`: a ParsedCall with a model, or a ParseError for a 400 answer.
 * `path`: what the route's path says — the model it names (Azure deployment, Gemini; it overrides the
 * body's) and Gemini's streaming. Gemini bodies are read by gemini.ts, the others by parse.ts.
 */
export function parseBody(
  dialect: Dialect,
  body: Uint8Array | string,
  path: PathFacts = {},
): ParsedCall | ParseError {
  let json: unknown;
  try {
    json = JSON.parse(bodyText(body));
  } catch (err) {
    return {
      error: err instanceof RangeError ? 'request body nests too deeply' : 'request body is not valid JSON',
    };
  }
  const parsed =
    dialect === GEMINI_DIALECT
      ? parseGeminiCall(json, { model: path.pathModel ?? '', stream: path.stream === true })
      : parseCall(dialect, json, path.pathModel);
  if (isParseError(parsed)) return parsed;
  if (!parsed.model) return { error: 'model is required' };
  return parsed;
}
