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
 */
import type {
  Dialect,
  ParsedCall,
  ParseError,
  Prompt,
  PromptMessage,
  ToolDef,
  ToolProperty,
} from './types.js';

export type { ParsedCall, ParseError } from './types.js';

export const MAX_DEPTH = 64;
export const MAX_ITEMS = 100_000;
export const MAX_NODES = 2_000_000;
export const MAX_OUTPUT_TOKENS = 10_000_000;
export const MAX_N = 128;

class Fail extends Error {}

function fail(msg: string): never {
  throw new Fail(msg);
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function own(o: Obj, k: string): unknown {
  return Object.hasOwn(o, k) ? o[k] : undefined;
}

function optString(o: Obj, k: string, where: string): string | undefined {
  const v = own(o, k);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`${where}${k} must be a string`);
  return v;
}

function optBool(o: Obj, k: string): boolean {
  const v = own(o, k);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') fail(`${k} must be a boolean`);
  return v;
}

function optPosInt(o: Obj, k: string, max: number): number | undefined {
  const v = own(o, k);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    fail(`${k} must be a positive integer ≤ ${max}`);
  }
  return v;
}

function checkArray(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) fail(`${where} must be an array`);
  if (v.length > MAX_ITEMS) fail(`${where} has ${v.length} items (max ${MAX_ITEMS})`);
  return v;
}

/**
 * Iterative JSON serialisation (same output as JSON.stringify for JSON-parsed data).
 * Returns undefined when nesting exceeds `maxDepth` or the value has more than MAX_NODES nodes.
 */
export function safeStringify(value: unknown, maxDepth = MAX_DEPTH): string | undefined {
  interface Frame {
    arr?: unknown[];
    obj?: Obj;
    keys?: string[];
    i: number;
  }
  const out: string[] = [];
  const stack: Frame[] = [];
  let nodes = 0;
  const visit = (x: unknown): boolean => {
    if (++nodes > MAX_NODES) return false;
    switch (typeof x) {
      case 'string':
        out.push(JSON.stringify(x));
        return true;
      case 'number':
        out.push(Number.isFinite(x) ? String(x) : 'null');
        return true;
      case 'boolean':
        out.push(x ? 'true' : 'false');
        return true;
      case 'object':
        if (x === null) {
          out.push('null');
          return true;
        }
        if (stack.length >= maxDepth) return false;
        if (Array.isArray(x)) {
          out.push('[');
          stack.push({ arr: x, i: 0 });
        } else {
          out.push('{');
          stack.push({ obj: x as Obj, keys: Object.keys(x), i: 0 });
        }
        return true;
      default:
        out.push('null');
        return true;
    }
  };
  if (!visit(value)) return undefined;
  while (stack.length > 0) {
    const f = stack[stack.length - 1];
    if (f.arr) {
      if (f.i >= f.arr.length) {
        out.push(']');
        stack.pop();
        continue;
      }
      if (f.i > 0) out.push(',');
      if (!visit(f.arr[f.i++])) return undefined;
    } else {
      const keys = f.keys!;
      if (f.i >= keys.length) {
        out.push('}');
        stack.pop();
        continue;
      }
      const k = keys[f.i];
      if (f.i > 0) out.push(',');
      f.i++;
      out.push(JSON.stringify(k), ':');
      if (!visit(f.obj![k])) return undefined;
    }
  }
  return out.join('');
}

function stringifyOrFail(v: unknown, where: string): string {
  const s = safeStringify(v);
  if (s === undefined) fail(`${where} is nested deeper than ${MAX_DEPTH} levels or too large`);
  return s;
}

/** Mutable state while parsing one body. */
class Ctx {
  messages: PromptMessage[] = [];
  texts: string[] = [];
  preTokenized = 0;
  images = 0;
  toolDefs: ToolDef[] = [];
  toolNames = new Set<string>();

  addTool(name: unknown): void {
    if (typeof name === 'string' && name.length > 0) this.toolNames.add(name);
  }
}

// ---------------------------------------------------------------------------------------------
// Content parts (OpenAI chat, OpenAI responses) and blocks (Anthropic)
// ---------------------------------------------------------------------------------------------

/** OpenAI chat / responses content: string | null | array of parts. Appends text to `parts`. */
function openaiContent(ctx: Ctx, content: unknown, parts: string[], where: string): void {
  if (content === undefined || content === null) return;
  if (typeof content === 'string') {
    parts.push(content);
    return;
  }
  const arr = checkArray(content, where);
  for (let j = 0; j < arr.length; j++) {
    const p = arr[j];
    if (typeof p === 'string') {
      parts.push(p);
      continue;
    }
    if (!isObj(p)) fail(`${where}[${j}] must be an object`);
    const type = own(p, 'type');
    switch (type) {
      case 'text':
      case 'input_text':
      case 'output_text': {
        const t = own(p, 'text');
        if (typeof t !== 'string') fail(`${where}[${j}].text must be a string`);
        parts.push(t);
        break;
      }
      case 'refusal': {
        const t = own(p, 'refusal');
        if (typeof t === 'string') parts.push(t);
        break;
      }
      case 'image_url':
      case 'input_image':
      case 'image':
        ctx.images++;
        break;
      default: {
        // input_audio, file, input_file, unknown: not tokenized (see caveats); keep any plain text.
        const t = own(p, 'text');
        if (typeof t === 'string') parts.push(t);
      }
    }
  }
}

/** Anthropic content: string | array of blocks. `depth` 0 = message content, 1 = inside tool_result. */
function anthropicContent(ctx: Ctx, content: unknown, parts: string[], where: string, depth: number): void {
  if (content === undefined || content === null) return;
  if (typeof content === 'string') {
    parts.push(content);
    return;
  }
  const arr = checkArray(content, where);
  for (let j = 0; j < arr.length; j++) {
    const b = arr[j];
    const w = `${where}[${j}]`;
    if (!isObj(b)) fail(`${w} must be an object`);
    switch (own(b, 'type')) {
      case 'text': {
        const t = own(b, 'text');
        if (typeof t !== 'string') fail(`${w}.text must be a string`);
        parts.push(t);
        break;
      }
      case 'image':
        ctx.images++;
        break;
      case 'tool_use':
      case 'server_tool_use': {
        const name = own(b, 'name');
        if (typeof name === 'string') parts.push(name);
        ctx.addTool(name);
        const input = own(b, 'input');
        if (input !== undefined) parts.push(stringifyOrFail(input, `${w}.input`));
        break;
      }
      case 'tool_result': {
        // tool_result content holds text/image blocks; a tool_result inside a tool_result is not
        // valid, so only one extra level is ever walked (bounded, non-recursive in practice).
        if (depth >= 1) fail(`${w}: tool_result cannot be nested`);
        anthropicContent(ctx, own(b, 'content'), parts, `${w}.content`, depth + 1);
        break;
      }
      default: {
        // thinking / redacted_thinking (previous-turn thinking is not billed as input), document,
        // search_result, unknown: only plain `text` is kept.
        const t = own(b, 'text');
        if (typeof t === 'string') parts.push(t);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tool definitions
// ---------------------------------------------------------------------------------------------

const PROP_KNOWN = new Set(['type', 'description', 'enum']);
const PARAMS_KNOWN = new Set(['type', 'properties', 'required', 'additionalProperties']);

function extraJson(o: Obj, known: Set<string>, where: string): string | undefined {
  let extra: Obj | undefined;
  for (const k of Object.keys(o)) {
    if (known.has(k)) continue;
    extra ??= {};
    extra[k] = o[k];
  }
  return extra ? stringifyOrFail(extra, where) : undefined;
}

function scalarString(v: unknown, where: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  return stringifyOrFail(v, where);
}

/** Normalise {name, description, parameters|input_schema} into a ToolDef. */
function toolDef(name: unknown, description: unknown, params: unknown, where: string): ToolDef {
  if (typeof name !== 'string') fail(`${where}.name must be a string`);
  const def: ToolDef = {
    name,
    description: typeof description === 'string' ? description : '',
    properties: [],
  };
  if (params === undefined || params === null) return def;
  if (!isObj(params)) fail(`${where} parameters must be an object`);
  def.extra = extraJson(params, PARAMS_KNOWN, `${where}.parameters`);
  const props = own(params, 'properties');
  if (props === undefined || props === null) return def;
  if (!isObj(props)) fail(`${where}.parameters.properties must be an object`);
  const keys = Object.keys(props);
  if (keys.length > MAX_ITEMS) fail(`${where}.parameters.properties has too many keys (max ${MAX_ITEMS})`);
  for (const key of keys) {
    const schema = props[key];
    const pw = `${where}.parameters.properties.${key}`;
    const prop: ToolProperty = { name: key, type: '', description: '' };
    if (isObj(schema)) {
      prop.type = scalarString(own(schema, 'type'), `${pw}.type`);
      prop.description = scalarString(own(schema, 'description'), `${pw}.description`);
      const en = own(schema, 'enum');
      if (Array.isArray(en)) {
        const items = checkArray(en, `${pw}.enum`);
        prop.enum = items.map((it, i) => scalarString(it, `${pw}.enum[${i}]`));
      }
      prop.extra = extraJson(schema, PROP_KNOWN, pw);
    } else {
      prop.extra = stringifyOrFail(schema, pw);
    }
    def.properties.push(prop);
  }
  return def;
}

/** OpenAI chat `tools` (and `functions`), Responses `tools`, Anthropic `tools`. */
function parseTools(ctx: Ctx, body: Obj, dialect: Dialect): void {
  const tools = own(body, 'tools');
  if (tools !== undefined && tools !== null) {
    const arr = checkArray(tools, 'tools');
    for (let i = 0; i < arr.length; i++) {
      const t = arr[i];
      const w = `tools[${i}]`;
      if (!isObj(t)) fail(`${w} must be an object`);
      const fn = own(t, 'function');
      if (isObj(fn)) {
        // OpenAI chat: { type: 'function', function: { name, description, parameters } }
        ctx.addTool(own(fn, 'name'));
        ctx.toolDefs.push(
          toolDef(own(fn, 'name'), own(fn, 'description'), own(fn, 'parameters'), `${w}.function`),
        );
      } else if (dialect === 'anthropic.messages' && own(t, 'input_schema') !== undefined) {
        ctx.addTool(own(t, 'name'));
        ctx.toolDefs.push(toolDef(own(t, 'name'), own(t, 'description'), own(t, 'input_schema'), w));
      } else if (own(t, 'type') === 'function' && typeof own(t, 'name') === 'string') {
        // Responses API: { type: 'function', name, description, parameters }
        ctx.addTool(own(t, 'name'));
        ctx.toolDefs.push(toolDef(own(t, 'name'), own(t, 'description'), own(t, 'parameters'), w));
      } else {
        // Built-in / server tools (web_search, file_search, custom, ...): name only, no schema tokens.
        const name = own(t, 'name');
        ctx.addTool(typeof name === 'string' ? name : own(t, 'type'));
        if (typeof own(t, 'description') === 'string' || own(t, 'parameters') !== undefined) {
          if (typeof name === 'string') {
            ctx.toolDefs.push(toolDef(name, own(t, 'description'), own(t, 'parameters'), w));
          }
        }
      }
    }
  }
  if (dialect === 'openai.chat') {
    const fns = own(body, 'functions');
    if (fns !== undefined && fns !== null) {
      const arr = checkArray(fns, 'functions');
      for (let i = 0; i < arr.length; i++) {
        const f = arr[i];
        if (!isObj(f)) fail(`functions[${i}] must be an object`);
        ctx.addTool(own(f, 'name'));
        ctx.toolDefs.push(
          toolDef(own(f, 'name'), own(f, 'description'), own(f, 'parameters'), `functions[${i}]`),
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dialects
// ---------------------------------------------------------------------------------------------

function pushToolCall(ctx: Ctx, parts: string[], fn: Obj, argKey: string, where: string): void {
  const name = own(fn, 'name');
  if (typeof name === 'string') parts.push(name);
  ctx.addTool(name);
  const args = own(fn, argKey);
  if (typeof args === 'string') parts.push(args);
  else if (args !== undefined && args !== null) parts.push(stringifyOrFail(args, `${where}.${argKey}`));
}

function parseOpenAIChat(ctx: Ctx, body: Obj): void {
  const msgs = checkArray(own(body, 'messages'), 'messages');
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    const w = `messages[${i}]`;
    if (!isObj(m)) fail(`${w} must be an object`);
    const msg: PromptMessage = { role: optString(m, 'role', `${w}.`) ?? '', parts: [] };
    const name = optString(m, 'name', `${w}.`);
    if (name !== undefined) msg.name = name;
    openaiContent(ctx, own(m, 'content'), msg.parts, `${w}.content`);
    const refusal = own(m, 'refusal');
    if (typeof refusal === 'string') msg.parts.push(refusal);
    const calls = own(m, 'tool_calls');
    if (calls !== undefined && calls !== null) {
      const arr = checkArray(calls, `${w}.tool_calls`);
      for (let j = 0; j < arr.length; j++) {
        const c = arr[j];
        const cw = `${w}.tool_calls[${j}]`;
        if (!isObj(c)) fail(`${cw} must be an object`);
        const fn = own(c, 'function');
        const custom = own(c, 'custom');
        if (isObj(fn)) pushToolCall(ctx, msg.parts, fn, 'arguments', `${cw}.function`);
        else if (isObj(custom)) pushToolCall(ctx, msg.parts, custom, 'input', `${cw}.custom`);
      }
    }
    const fc = own(m, 'function_call');
    if (isObj(fc)) pushToolCall(ctx, msg.parts, fc, 'arguments', `${w}.function_call`);
    const tcid = own(m, 'tool_call_id');
    if (typeof tcid === 'string') msg.parts.push(tcid);
    ctx.messages.push(msg);
  }
}

function parseResponses(ctx: Ctx, body: Obj): void {
  const instructions = optString(body, 'instructions', '');
  if (instructions !== undefined) ctx.messages.push({ role: 'system', parts: [instructions] });
  const input = own(body, 'input');
  if (input === undefined || input === null) return;
  if (typeof input === 'string') {
    ctx.messages.push({ role: 'user', parts: [input] });
    return;
  }
  if (!Array.isArray(input)) fail('input must be a string or an array');
  const items = checkArray(input, 'input');
  for (let i = 0; i < items.length; i++) {
    const it = items[i];
    const w = `input[${i}]`;
    if (!isObj(it)) fail(`${w} must be an object`);
    const type = own(it, 'type');
    if (type === 'message' || (type === undefined && own(it, 'role') !== undefined)) {
      const msg: PromptMessage = { role: optString(it, 'role', `${w}.`) ?? '', parts: [] };
      openaiContent(ctx, own(it, 'content'), msg.parts, `${w}.content`);
      ctx.messages.push(msg);
    } else if (type === 'function_call' || type === 'custom_tool_call') {
      const msg: PromptMessage = { role: 'assistant', parts: [] };
      pushToolCall(ctx, msg.parts, it, type === 'function_call' ? 'arguments' : 'input', w);
      ctx.messages.push(msg);
    } else if (type === 'function_call_output' || type === 'custom_tool_call_output') {
      const msg: PromptMessage = { role: 'tool', parts: [] };
      const callId = own(it, 'call_id');
      if (typeof callId === 'string') msg.parts.push(callId);
      openaiContent(ctx, own(it, 'output'), msg.parts, `${w}.output`);
      ctx.messages.push(msg);
    }
    // reasoning, item_reference, built-in tool call items: not counted (see caveats).
  }
}

function parseAnthropic(ctx: Ctx, body: Obj): void {
  const system = own(body, 'system');
  if (system !== undefined && system !== null) {
    if (typeof system !== 'string' && !Array.isArray(system)) fail('system must be a string or an array');
    const msg: PromptMessage = { role: 'system', parts: [] };
    anthropicContent(ctx, system, msg.parts, 'system', 0);
    ctx.messages.push(msg);
  }
  const msgs = checkArray(own(body, 'messages'), 'messages');
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    const w = `messages[${i}]`;
    if (!isObj(m)) fail(`${w} must be an object`);
    const msg: PromptMessage = { role: optString(m, 'role', `${w}.`) ?? '', parts: [] };
    anthropicContent(ctx, own(m, 'content'), msg.parts, `${w}.content`, 0);
    ctx.messages.push(msg);
  }
}

/** completions `prompt` / embeddings `input`: string | string[] | number[] | number[][]. */
function parseTextInput(ctx: Ctx, v: unknown, field: string): void {
  if (v === undefined || v === null) return;
  if (typeof v === 'string') {
    ctx.texts.push(v);
    return;
  }
  const bad = () =>
    fail(`${field} must be a string, an array of strings, an array of token ids or an array of token arrays`);
  if (!Array.isArray(v)) bad();
  const arr = v as unknown[];
  if (arr.length === 0) return;
  if (typeof arr[0] === 'number') {
    // A single token-id array: counts as its length (not capped, not tokenized).
    for (let i = 0; i < arr.length; i++) if (typeof arr[i] !== 'number') bad();
    ctx.preTokenized += arr.length;
    return;
  }
  if (arr.length > MAX_ITEMS) fail(`${field} has ${arr.length} items (max ${MAX_ITEMS})`);
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i];
    if (typeof x === 'string') ctx.texts.push(x);
    else if (Array.isArray(x)) {
      for (let j = 0; j < x.length; j++) if (typeof x[j] !== 'number') bad();
      ctx.preTokenized += x.length;
    } else bad();
  }
}

// ---------------------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------------------

/**
 * Parse a JSON-decoded request body for `dialect`. Never throws.
 * @param azureDeployment deployment name from an Azure path; overrides body.model.
 */
export function parseCall(
  dialect: Dialect,
  body: unknown,
  azureDeployment?: string,
): ParsedCall | ParseError {
  try {
    return parseInner(dialect, body, azureDeployment);
  } catch (e) {
    if (e instanceof Fail) return { error: e.message };
    // RangeError (e.g. allocation failure) or anything unexpected from hostile input.
    return { error: `unparseable request body: ${e instanceof Error ? e.message : String(e)}` };
  }
}

function parseInner(dialect: Dialect, body: unknown, azureDeployment?: string): ParsedCall {
  if (!isObj(body)) fail('request body must be a JSON object');
  const ctx = new Ctx();
  const model = azureDeployment ?? optString(body, 'model', '');
  // model names end up in logs, metrics labels (configured names only) and queue entries: keep them short
  if (model !== undefined && model.length > 256) fail('model must be at most 256 characters');
  let n = 1;
  let requestedOutput: number | undefined;
  let stream = false;
  let kind: Prompt['kind'] = 'chat';

  switch (dialect) {
    case 'openai.chat': {
      n = optPosInt(body, 'n', MAX_N) ?? 1;
      const a = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
      const b = optPosInt(body, 'max_completion_tokens', MAX_OUTPUT_TOKENS);
      const max = a === undefined ? b : b === undefined ? a : Math.max(a, b);
      if (max !== undefined) requestedOutput = max * n;
      stream = optBool(body, 'stream');
      parseOpenAIChat(ctx, body);
      parseTools(ctx, body, dialect);
      break;
    }
    case 'openai.completions': {
      kind = 'text';
      n = optPosInt(body, 'n', MAX_N) ?? 1;
      const bestOf = optPosInt(body, 'best_of', MAX_N) ?? 1;
      const max = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
      // best_of completions are generated (and billed) server-side even though only n are returned.
      if (max !== undefined) requestedOutput = max * Math.max(n, bestOf);
      stream = optBool(body, 'stream');
      parseTextInput(ctx, own(body, 'prompt'), 'prompt');
      const suffix = optString(body, 'suffix', '');
      if (suffix) ctx.texts.push(suffix);
      break;
    }
    case 'openai.embeddings': {
      kind = 'text';
      const input = own(body, 'input');
      if (input === undefined || input === null) fail('input is required');
      parseTextInput(ctx, input, 'input');
      break;
    }
    case 'openai.responses': {
      const max = optPosInt(body, 'max_output_tokens', MAX_OUTPUT_TOKENS);
      if (max !== undefined) requestedOutput = max;
      stream = optBool(body, 'stream');
      parseResponses(ctx, body);
      parseTools(ctx, body, dialect);
      break;
    }
    case 'anthropic.messages': {
      const max = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
      if (max !== undefined) requestedOutput = max;
      stream = optBool(body, 'stream');
      parseAnthropic(ctx, body);
      parseTools(ctx, body, dialect);
      break;
    }
    default:
      fail(`unknown dialect ${String(dialect)}`);
  }

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
