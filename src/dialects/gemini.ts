/**
 * The Gemini API dialect, request side: `POST …/models/{model}:generateContent` and
 * `…:streamGenerateContent` (with `?alt=sse` the answer is SSE, without it a streamed JSON array).
 * Matches the Gemini Developer API (`/v1beta/models/…`, `/v1/models/…`) and Vertex AI
 * (`/v1/projects/{p}/locations/{l}/publishers/google/models/…`) paths.
 *
 * The body (GenerateContentRequest) is parsed into the ParsedCall shape the other dialects produce:
 * `contents[].parts[]` text, function calls (name + JSON args) and function responses (name + JSON
 * response) as message parts, inline/file data as images (counted, not tokenized),
 * `systemInstruction` as a system message, `tools[].functionDeclarations` as tool definitions (built-in
 * tools such as googleSearch / codeExecution by name only), `generationConfig.maxOutputTokens` ×
 * `candidateCount` as the requested output. Field names are accepted in both the proto-JSON camelCase
 * and the snake_case spelling, as the API does.
 *
 * Token counts for Gemini are estimates: Google's tokenizer is not public, so the prompt is counted
 * with the configured tiktoken encoding (like Anthropic's); settlement corrects them from the
 * response's usageMetadata.
 *
 * Wired in by route.ts (classifyPath → a Route whose pathModel is the path's model, so a reroute is
 * refused like an Azure deployment's) and body.ts (parseBody, for the decision and the token workers).
 *
 * Robustness: as parse.ts — never throws, arrays capped at MAX_ITEMS, JSON re-serialisation bounded
 * by safeStringify's depth and node caps, unknown fields and part kinds ignored.
 */
import {
  checkArray,
  Fail,
  fail,
  isObj,
  MAX_ITEMS,
  MAX_N,
  MAX_OUTPUT_TOKENS,
  type Obj,
  stringifyOrFail,
} from './json.js';
import { extraJson, PROP_KNOWN, scalarString } from './tools.js';
import type { Dialect, ParsedCall, ParseError, PromptMessage, ToolDef, ToolProperty } from './types.js';

export type GeminiDialect = Extract<Dialect, 'gemini.generateContent'>;
export const GEMINI_DIALECT: GeminiDialect = 'gemini.generateContent';

/** ParsedCall of a Gemini request (a ParsedCall whose dialect is Gemini's). */
export type GeminiParsedCall = Omit<ParsedCall, 'dialect'> & { dialect: GeminiDialect };

export interface GeminiRoute {
  dialect: GeminiDialect;
  /** The model from the path (URL-decoded), e.g. `gemini-2.5-flash`. */
  model: string;
  /** streamGenerateContent. */
  stream: boolean;
  /** `alt=sse` was asked for: the answer is SSE (else a JSON array when streaming). */
  sse: boolean;
}

const PATH_RE = /\/models\/([^/:]+):(generateContent|streamGenerateContent)$/;

/**
 * Classify a request path (`:path`, may include a query string) as a Gemini generate call; undefined
 * for anything else (countTokens, embedContent, model listings, …).
 */
export function classifyGeminiPath(path: string): GeminiRoute | undefined {
  if (typeof path !== 'string' || path.length === 0 || path.length > 8192) return undefined;
  const q = path.search(/[?#]/);
  const p = q >= 0 ? path.slice(0, q) : path;
  const query = q >= 0 && path[q] === '?' ? path.slice(q + 1).split('#')[0] : '';
  const m = PATH_RE.exec(p);
  if (!m) return undefined;
  let model: string;
  try {
    model = decodeURIComponent(m[1]);
  } catch {
    return undefined;
  }
  if (model.length === 0 || model.length > 256) return undefined;
  const sse = query.split('&').some((kv) => kv.toLowerCase() === 'alt=sse');
  return { dialect: GEMINI_DIALECT, model, stream: m[2] === 'streamGenerateContent', sse };
}

/** A field in camelCase or snake_case spelling (camelCase wins). */
function field(o: Obj, camel: string): unknown {
  if (Object.hasOwn(o, camel)) return o[camel];
  const snake = camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return Object.hasOwn(o, snake) ? o[snake] : undefined;
}
function optPosInt(o: Obj, camel: string, max: number, where: string): number | undefined {
  const v = field(o, camel);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    fail(`${where}${camel} must be a positive integer ≤ ${max}`);
  }
  return v;
}

class Ctx {
  images = 0;
  toolDefs: ToolDef[] = [];
  toolNames = new Set<string>();
  addTool(name: unknown): void {
    if (typeof name === 'string' && name.length > 0) this.toolNames.add(name);
  }
}

/** parts[] of a Content: text, function calls/responses, media. */
function parts(ctx: Ctx, v: unknown, out: string[], where: string): void {
  if (v === undefined || v === null) return;
  const arr = checkArray(v, where);
  for (let i = 0; i < arr.length; i++) {
    const p = arr[i];
    const w = `${where}[${i}]`;
    if (!isObj(p)) fail(`${w} must be an object`);
    const text = field(p, 'text');
    if (text !== undefined && text !== null) {
      if (typeof text !== 'string') fail(`${w}.text must be a string`);
      out.push(text);
    }
    const fc = field(p, 'functionCall');
    if (isObj(fc)) {
      const name = fc.name;
      if (typeof name === 'string') out.push(name);
      ctx.addTool(name);
      if (fc.args !== undefined && fc.args !== null)
        out.push(stringifyOrFail(fc.args, `${w}.functionCall.args`));
    }
    const fr = field(p, 'functionResponse');
    if (isObj(fr)) {
      if (typeof fr.name === 'string') out.push(fr.name);
      if (fr.response !== undefined && fr.response !== null)
        out.push(stringifyOrFail(fr.response, `${w}.functionResponse.response`));
    }
    if (isObj(field(p, 'inlineData')) || isObj(field(p, 'fileData'))) ctx.images++;
    const code = field(p, 'executableCode');
    if (isObj(code) && typeof code.code === 'string') out.push(code.code);
    const result = field(p, 'codeExecutionResult');
    if (isObj(result) && typeof result.output === 'string') out.push(result.output);
  }
}

const PARAMS_KNOWN = new Set(['type', 'properties', 'required']);

/** A FunctionDeclaration: { name, description, parameters | parametersJsonSchema }. */
function declaration(d: unknown, where: string): ToolDef {
  if (!isObj(d)) fail(`${where} must be an object`);
  if (typeof d.name !== 'string') fail(`${where}.name must be a string`);
  const def: ToolDef = {
    name: d.name,
    description: typeof d.description === 'string' ? d.description : '',
    properties: [],
  };
  const params = field(d, 'parameters') ?? field(d, 'parametersJsonSchema');
  if (params === undefined || params === null) return def;
  if (!isObj(params)) fail(`${where}.parameters must be an object`);
  def.extra = extraJson(params, PARAMS_KNOWN, `${where}.parameters`);
  const props = params.properties;
  if (props === undefined || props === null) return def;
  if (!isObj(props)) fail(`${where}.parameters.properties must be an object`);
  const keys = Object.keys(props);
  if (keys.length > MAX_ITEMS) fail(`${where}.parameters.properties has too many keys`);
  for (const key of keys) {
    const s = props[key];
    const pw = `${where}.parameters.properties.${key}`;
    const prop: ToolProperty = { name: key, type: '', description: '' };
    if (isObj(s)) {
      // Gemini's OpenAPI-subset schema spells types in upper case (STRING); counted as sent.
      prop.type = scalarString(s.type, `${pw}.type`);
      prop.description = scalarString(s.description, `${pw}.description`);
      if (Array.isArray(s.enum))
        prop.enum = checkArray(s.enum, `${pw}.enum`).map((x, i) => scalarString(x, `${pw}.enum[${i}]`));
      prop.extra = extraJson(s, PROP_KNOWN, pw);
    } else prop.extra = stringifyOrFail(s, pw);
    def.properties.push(prop);
  }
  return def;
}

function tools(ctx: Ctx, v: unknown): void {
  if (v === undefined || v === null) return;
  const arr = checkArray(v, 'tools');
  for (let i = 0; i < arr.length; i++) {
    const t = arr[i];
    const w = `tools[${i}]`;
    if (!isObj(t)) fail(`${w} must be an object`);
    for (const key of Object.keys(t)) {
      if (key === 'functionDeclarations' || key === 'function_declarations') {
        const decls = checkArray(t[key], `${w}.functionDeclarations`);
        for (let j = 0; j < decls.length; j++) {
          const def = declaration(decls[j], `${w}.functionDeclarations[${j}]`);
          ctx.addTool(def.name);
          ctx.toolDefs.push(def);
        }
      } else {
        // googleSearch, codeExecution, urlContext, retrieval, …: the built-in tool's name only.
        ctx.addTool(key);
      }
    }
  }
}

function parseInner(body: unknown, route: Pick<GeminiRoute, 'model' | 'stream'>): GeminiParsedCall {
  if (!isObj(body)) fail('request body must be a JSON object');
  const ctx = new Ctx();
  const messages: PromptMessage[] = [];

  const sys = field(body, 'systemInstruction');
  if (sys !== undefined && sys !== null) {
    const msg: PromptMessage = { role: 'system', parts: [] };
    if (typeof sys === 'string') msg.parts.push(sys);
    else if (isObj(sys)) parts(ctx, sys.parts, msg.parts, 'systemInstruction.parts');
    else fail('systemInstruction must be an object');
    messages.push(msg);
  }

  const contents = field(body, 'contents');
  if (contents === undefined || contents === null) fail('contents is required');
  const arr = checkArray(contents, 'contents');
  for (let i = 0; i < arr.length; i++) {
    const c = arr[i];
    const w = `contents[${i}]`;
    if (!isObj(c)) fail(`${w} must be an object`);
    const role = c.role;
    if (role !== undefined && role !== null && typeof role !== 'string') fail(`${w}.role must be a string`);
    const msg: PromptMessage = { role: typeof role === 'string' ? role : 'user', parts: [] };
    parts(ctx, c.parts, msg.parts, `${w}.parts`);
    messages.push(msg);
  }

  tools(ctx, field(body, 'tools'));

  let n = 1;
  let requestedOutput: number | undefined;
  const gc = field(body, 'generationConfig');
  if (gc !== undefined && gc !== null) {
    if (!isObj(gc)) fail('generationConfig must be an object');
    n = optPosInt(gc, 'candidateCount', MAX_N, 'generationConfig.') ?? 1;
    const max = optPosInt(gc, 'maxOutputTokens', MAX_OUTPUT_TOKENS, 'generationConfig.');
    if (max !== undefined) requestedOutput = max * n;
  }

  const call: GeminiParsedCall = {
    dialect: GEMINI_DIALECT,
    model: route.model,
    n,
    stream: route.stream,
    prompt: {
      kind: 'chat',
      messages,
      texts: [],
      preTokenized: 0,
      images: ctx.images,
      toolDefs: ctx.toolDefs,
    },
    tools: [...ctx.toolNames],
  };
  if (requestedOutput !== undefined) call.requestedOutput = requestedOutput;
  return call;
}

/** Parse a JSON-decoded Gemini request body; the model and streaming come from the path. Never throws. */
export function parseGeminiCall(
  body: unknown,
  route: Pick<GeminiRoute, 'model' | 'stream'>,
): GeminiParsedCall | ParseError {
  try {
    return parseInner(body, route);
  } catch (e) {
    if (e instanceof Fail) return { error: e.message };
    return { error: `unparseable request body: ${e instanceof Error ? e.message : String(e)}` };
  }
}

/** Parse raw request body bytes (UTF-8 JSON) of a Gemini call. Never throws. */
export function parseGeminiBody(
  body: Uint8Array | string,
  route: Pick<GeminiRoute, 'model' | 'stream'>,
): GeminiParsedCall | ParseError {
  let parsed: unknown;
  try {
    const text =
      typeof body === 'string'
        ? body
        : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8');
    parsed = JSON.parse(text);
  } catch (err) {
    return {
      error: err instanceof RangeError ? 'request body nests too deeply' : 'request body is not valid JSON',
    };
  }
  return parseGeminiCall(parsed, route);
}
