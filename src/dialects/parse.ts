/**
 * Parse an LLM request body (already JSON-decoded) per API dialect into a ParsedCall.
 *
 * Robustness contract (the input is attacker-controlled):
 *  - never throws: every failure becomes a ParseError `{ error }`;
 *  - never recurses over user data: the only generic walk (JSON re-serialisation of tool_use inputs and
 *    JSON-schema fragments) is iterative and capped at MAX_DEPTH nesting levels and MAX_NODES nodes;
 *  - arrays that become per-item work (messages, content parts, tools, input items) are capped at
 *    MAX_ITEMS elements; token-id arrays only contribute their length and are not capped;
 *  - unknown fields and unknown content-part / item types are ignored.
 *
 * Files: json.ts (the shared walker and bounds), openai.ts, anthropic.ts, tools.ts; this file picks
 * the dialect and assembles the call.
 */
import { readAnthropic } from './anthropic.js';
import { Ctx, Fail, fail, isObj, type Obj, optString } from './json.js';
import { readChat, readCompletions, readEmbeddings, readResponses } from './openai.js';
import type { CallShape, Dialect, ParsedCall, ParseError } from './types.js';

export { MAX_DEPTH, MAX_ITEMS, MAX_N, MAX_NODES, MAX_OUTPUT_TOKENS, safeStringify } from './json.js';
export type { ParsedCall, ParseError } from './types.js';

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

/** The dialects read here; Gemini's (model and streaming from the path) is gemini.ts's, see body.ts. */
type BodyDialect = Exclude<Dialect, 'gemini.generateContent'>;

/**
 * Parse a JSON-decoded request body for `dialect`. Never throws.
 * @param pathModel the model the path names (an Azure deployment); overrides body.model.
 */
export function parseCall(dialect: Dialect, body: unknown, pathModel?: string): ParsedCall | ParseError {
  try {
    return parseInner(dialect, body, pathModel);
  } catch (e) {
    if (e instanceof Fail) return { error: e.message };
    // RangeError (e.g. allocation failure) or anything unexpected from hostile input.
    return { error: `unparseable request body: ${e instanceof Error ? e.message : String(e)}` };
  }
}

const DIALECTS: Record<BodyDialect, (ctx: Ctx, body: Obj) => CallShape> = {
  'openai.chat': readChat,
  'openai.completions': readCompletions,
  'openai.embeddings': readEmbeddings,
  'openai.responses': readResponses,
  'anthropic.messages': readAnthropic,
};

function parseInner(dialect: Dialect, body: unknown, pathModel?: string): ParsedCall {
  if (!isObj(body)) fail('request body must be a JSON object');
  const ctx = new Ctx();
  const model = pathModel ?? optString(body, 'model', '');
  // model names end up in logs, metrics labels (configured names only) and queue entries: keep them short
  if (model !== undefined && model.length > 256) fail('model must be at most 256 characters');
  const read = Object.hasOwn(DIALECTS, dialect) ? DIALECTS[dialect as BodyDialect] : undefined;
  if (!read) fail(`unknown dialect ${String(dialect)}`);
  const { n, requestedOutput, stream, kind } = read(ctx, body);
  const call: ParsedCall = {
    dialect,
    n,
    stream,
    prompt: {
      kind,
      messages: ctx.messages,
      texts: ctx.texts,
      preTokenized: ctx.preTokenized,
      images: ctx.images,
      toolDefs: ctx.toolDefs,
    },
    tools: [...ctx.toolNames],
  };
  if (model !== undefined) call.model = model;
  if (requestedOutput !== undefined) call.requestedOutput = requestedOutput;
  return call;
}
