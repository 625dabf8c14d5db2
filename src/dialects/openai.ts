/** The OpenAI dialects: chat completions, completions, embeddings, Responses (Azure OpenAI: the same bodies). */
import {
  type Ctx,
  checkArray,
  fail,
  isObj,
  MAX_ITEMS,
  MAX_N,
  MAX_OUTPUT_TOKENS,
  type Obj,
  optBool,
  optPosInt,
  optString,
  own,
} from './json.js';
import { parseTools, pushToolCall } from './tools.js';
import type { CallShape, PromptMessage } from './types.js';

/** OpenAI chat / responses content: string | null | array of parts. Appends text to `parts`. */
export function openaiContent(ctx: Ctx, content: unknown, parts: string[], where: string): void {
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

export function parseOpenAIChat(ctx: Ctx, body: Obj): void {
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

export function parseResponses(ctx: Ctx, body: Obj): void {
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

/** completions `prompt` / embeddings `input`: string | string[] | number[] | number[][]. */
export function parseTextInput(ctx: Ctx, v: unknown, field: string): void {
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

/** Chat completions: n choices, max_tokens / max_completion_tokens (the larger) × n. */
export function readChat(ctx: Ctx, body: Obj): CallShape {
  const n = optPosInt(body, 'n', MAX_N) ?? 1;
  const a = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
  const b = optPosInt(body, 'max_completion_tokens', MAX_OUTPUT_TOKENS);
  const max = a === undefined ? b : b === undefined ? a : Math.max(a, b);
  const stream = optBool(body, 'stream');
  parseOpenAIChat(ctx, body);
  parseTools(ctx, body, 'openai.chat');
  return { n, requestedOutput: max === undefined ? undefined : max * n, stream, kind: 'chat' };
}

/** Legacy completions: prompt (+ suffix); best_of completions are generated (and billed) server-side. */
export function readCompletions(ctx: Ctx, body: Obj): CallShape {
  const n = optPosInt(body, 'n', MAX_N) ?? 1;
  const bestOf = optPosInt(body, 'best_of', MAX_N) ?? 1;
  const max = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
  const stream = optBool(body, 'stream');
  parseTextInput(ctx, own(body, 'prompt'), 'prompt');
  const suffix = optString(body, 'suffix', '');
  if (suffix) ctx.texts.push(suffix);
  const requestedOutput = max === undefined ? undefined : max * Math.max(n, bestOf);
  return { n, requestedOutput, stream, kind: 'text' };
}

/** Embeddings: input only, no output. */
export function readEmbeddings(ctx: Ctx, body: Obj): CallShape {
  const input = own(body, 'input');
  if (input === undefined || input === null) fail('input is required');
  parseTextInput(ctx, input, 'input');
  return { n: 1, stream: false, kind: 'text' };
}

/** Responses API: instructions + input items, max_output_tokens. */
export function readResponses(ctx: Ctx, body: Obj): CallShape {
  const requestedOutput = optPosInt(body, 'max_output_tokens', MAX_OUTPUT_TOKENS);
  const stream = optBool(body, 'stream');
  parseResponses(ctx, body);
  parseTools(ctx, body, 'openai.responses');
  return { n: 1, requestedOutput, stream, kind: 'chat' };
}
