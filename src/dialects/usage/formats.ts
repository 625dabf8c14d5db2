/**
 * Per-dialect readers of provider responses: where the usage is, what it means, and which content to
 * collect for counting when it is missing. Shapes follow the providers' API references:
 *  - OpenAI chat.completion / chat.completion.chunk / text_completion / embeddings `usage`
 *    { prompt_tokens, completion_tokens, total_tokens, prompt_tokens_details { cached_tokens },
 *      completion_tokens_details { reasoning_tokens } } — streamed only as the last chunk (empty
 *    `choices`) when the request set stream_options.include_usage. Azure OpenAI: the same shapes (plus
 *    prompt_filter_results chunks with empty `choices`, ignored).
 *  - OpenAI Responses `usage` { input_tokens, input_tokens_details { cached_tokens }, output_tokens,
 *    output_tokens_details { reasoning_tokens }, total_tokens }, streamed in `response.completed`
 *    (also `response.incomplete` / `response.failed`) as `response.usage`.
 *  - Anthropic Messages `usage` { input_tokens, output_tokens, cache_creation_input_tokens,
 *    cache_read_input_tokens }; streamed: message_start.message.usage (input and cache counts, and a
 *    first partial output count), message_delta.usage (cumulative output_tokens; newer API versions
 *    also repeat the input counts).
 *  - Gemini GenerateContentResponse `usageMetadata` { promptTokenCount, cachedContentTokenCount,
 *    candidatesTokenCount, toolUsePromptTokenCount, thoughtsTokenCount, totalTokenCount }; streamed
 *    (alt=sse, or a JSON array without it) on chunks, cumulative; final on the chunk whose candidate
 *    carries a finishReason.
 */
import type { GeminiDialect } from '../gemini.js';
import type { Dialect } from '../types.js';
import type { TextCollector } from './collect.js';

export type UsageDialect = Dialect | GeminiDialect;

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

const MAX_COUNT = 1e10;

/** A non-negative integer count, or undefined. */
function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= MAX_COUNT ? Math.floor(v) : undefined;
}

function sub(o: unknown, k: string): unknown {
  return isObj(o) ? o[k] : undefined;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** Mutable state of one scan. An event's usage may be taken now (`collect` off), its text later. */
export class UsageAcc {
  prompt?: { prompt: number; cachedPrompt: number; cacheWrite: number };
  output?: { output: number; reasoning: number };
  outputFloor = 0;
  /** Whether output text pieces are collected, and usage counts taken. */
  collect = true;
  takeUsage = true;
  constructor(readonly text: TextCollector) {}

  /** An output text piece (non-strings are ignored). */
  add(piece: unknown): void {
    if (this.collect) this.text.add(piece);
  }

  setPrompt(prompt: number, cachedPrompt: number, cacheWrite: number): void {
    if (!this.takeUsage) return;
    this.prompt = {
      prompt,
      cachedPrompt: Math.min(cachedPrompt, prompt),
      cacheWrite: Math.min(cacheWrite, prompt),
    };
  }

  setOutput(output: number, reasoning: number, final: boolean): void {
    if (!this.takeUsage) return;
    if (final) this.output = { output, reasoning: Math.min(reasoning, output) };
    else this.outputFloor = Math.max(this.outputFloor, output);
  }
}

export interface Format {
  /** Keys whose last object in a JSON tail is the usage (for bodies too large to buffer). */
  readonly usageKeys: readonly string[];
  /**
   * Whether a usage found in the tail of an over-long SSE event is the final one (OpenAI: the usage
   * chunk / response.completed; Anthropic and Gemini: it may be a partial count, kept as a floor).
   */
  readonly overLongEventFinal: boolean;
  /** A whole JSON body. Returns whether it carried a usage. */
  json(body: unknown, acc: UsageAcc): boolean;
  /** One SSE event's data, JSON-parsed (`event` is the SSE event name, if any). */
  event(event: string | undefined, data: unknown, acc: UsageAcc): void;
  /** A usage object found by a tail scan (`final`: the body ended normally). */
  usage(u: unknown, acc: UsageAcc, final: boolean): void;
}

// ---------------------------------------------------------------------------------------------
// OpenAI (chat, completions, embeddings, responses; Azure)
// ---------------------------------------------------------------------------------------------

/** OpenAI usage in either naming (chat-style prompt_/completion_ or Responses-style input_/output_). */
function openaiUsage(u: unknown, acc: UsageAcc, final: boolean): boolean {
  if (!isObj(u)) return false;
  const prompt = num(u.prompt_tokens) ?? num(u.input_tokens);
  const output = num(u.completion_tokens) ?? num(u.output_tokens);
  if (prompt === undefined && output === undefined) return false;
  const cached =
    num(sub(u.prompt_tokens_details, 'cached_tokens')) ??
    num(sub(u.input_tokens_details, 'cached_tokens')) ??
    0;
  const reasoning =
    num(sub(u.completion_tokens_details, 'reasoning_tokens')) ??
    num(sub(u.output_tokens_details, 'reasoning_tokens')) ??
    0;
  if (prompt !== undefined) acc.setPrompt(prompt, cached, 0);
  // Embeddings report no completion tokens: their output is 0.
  acc.setOutput(output ?? 0, reasoning, final);
  return true;
}

function openaiContent(content: unknown, acc: UsageAcc): void {
  if (typeof content === 'string') acc.add(content);
  else
    for (const p of arr(content)) {
      if (!isObj(p)) continue;
      acc.add(p.text);
      acc.add(p.refusal);
    }
}

function openaiToolCalls(calls: unknown, acc: UsageAcc): void {
  for (const c of arr(calls)) {
    const fn = sub(c, 'function');
    acc.add(sub(fn, 'name'));
    acc.add(sub(fn, 'arguments'));
  }
}

/** chat.completion / text_completion / embeddings (no content) bodies. */
function openaiChatJson(body: unknown, acc: UsageAcc): boolean {
  if (openaiUsage(sub(body, 'usage'), acc, true)) return true;
  for (const ch of arr(sub(body, 'choices'))) {
    if (!isObj(ch)) continue;
    acc.add(ch.text); // completions
    const m = ch.message;
    if (!isObj(m)) continue;
    openaiContent(m.content, acc);
    acc.add(m.refusal);
    openaiToolCalls(m.tool_calls, acc);
    const fc = m.function_call;
    acc.add(sub(fc, 'name'));
    acc.add(sub(fc, 'arguments'));
  }
  return false;
}

function openaiChatEvent(_event: string | undefined, data: unknown, acc: UsageAcc): void {
  if (!isObj(data)) return;
  // The usage chunk comes last (choices: []); earlier chunks carry "usage": null.
  openaiUsage(data.usage, acc, true);
  for (const ch of arr(data.choices)) {
    if (!isObj(ch)) continue;
    acc.add(ch.text); // completions stream
    const d = ch.delta;
    if (!isObj(d)) continue;
    openaiContent(d.content, acc);
    acc.add(d.refusal);
    openaiToolCalls(d.tool_calls, acc);
    const fc = d.function_call;
    acc.add(sub(fc, 'name'));
    acc.add(sub(fc, 'arguments'));
  }
}

/** Responses `output` items: message text/refusal, function/custom tool calls, reasoning summaries. */
function responsesOutput(output: unknown, acc: UsageAcc): void {
  for (const it of arr(output)) {
    if (!isObj(it)) continue;
    openaiContent(it.content, acc);
    acc.add(it.name);
    acc.add(it.arguments);
    acc.add(it.input);
    for (const s of arr(it.summary)) acc.add(sub(s, 'text'));
  }
}

function responsesJson(body: unknown, acc: UsageAcc): boolean {
  if (openaiUsage(sub(body, 'usage'), acc, true)) return true;
  responsesOutput(sub(body, 'output'), acc);
  return false;
}

const RESPONSES_DELTAS = new Set([
  'response.output_text.delta',
  'response.refusal.delta',
  'response.function_call_arguments.delta',
  'response.custom_tool_call_input.delta',
  'response.reasoning_text.delta',
  'response.reasoning_summary_text.delta',
]);
const RESPONSES_FINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

function responsesEvent(event: string | undefined, data: unknown, acc: UsageAcc): void {
  if (!isObj(data)) return;
  const type = typeof data.type === 'string' ? data.type : event;
  if (type === undefined) return;
  if (RESPONSES_DELTAS.has(type)) acc.add(data.delta);
  else if (type === 'response.output_item.added') {
    const item = data.item;
    if (isObj(item) && (item.type === 'function_call' || item.type === 'custom_tool_call'))
      acc.add(item.name);
  } else if (RESPONSES_FINAL.has(type)) openaiUsage(sub(data.response, 'usage'), acc, true);
}

const openaiFormat: Format = {
  usageKeys: ['usage'],
  overLongEventFinal: true,
  json: openaiChatJson,
  event: openaiChatEvent,
  usage: (u, acc, final) => void openaiUsage(u, acc, final),
};

const responsesFormat: Format = {
  usageKeys: ['usage'],
  overLongEventFinal: true,
  json: responsesJson,
  event: responsesEvent,
  usage: (u, acc, final) => void openaiUsage(u, acc, final),
};

// ---------------------------------------------------------------------------------------------
// Anthropic Messages
// ---------------------------------------------------------------------------------------------

function anthropicPrompt(u: Obj, acc: UsageAcc): void {
  const input = num(u.input_tokens);
  if (input === undefined) return;
  const read = num(u.cache_read_input_tokens) ?? 0;
  const write = num(u.cache_creation_input_tokens) ?? 0;
  acc.setPrompt(input + read + write, read, write);
}

function anthropicUsage(u: unknown, acc: UsageAcc, final: boolean): boolean {
  if (!isObj(u)) return false;
  anthropicPrompt(u, acc);
  const out = num(u.output_tokens);
  if (out !== undefined) acc.setOutput(out, 0, final);
  return out !== undefined || num(u.input_tokens) !== undefined;
}

function anthropicBlocks(content: unknown, acc: UsageAcc): void {
  for (const b of arr(content)) {
    if (!isObj(b)) continue;
    acc.add(b.text);
    acc.add(b.thinking);
    if (b.type === 'tool_use' || b.type === 'server_tool_use') {
      acc.add(b.name);
      if (b.input !== undefined) {
        try {
          acc.add(JSON.stringify(b.input));
        } catch {
          // unserialisable: skip
        }
      }
    }
  }
}

const anthropicFormat: Format = {
  usageKeys: ['usage'],
  overLongEventFinal: false,
  json(body, acc) {
    if (anthropicUsage(sub(body, 'usage'), acc, true)) return true;
    anthropicBlocks(sub(body, 'content'), acc);
    return false;
  },
  event(event, data, acc) {
    if (!isObj(data)) return;
    const type = typeof data.type === 'string' ? data.type : event;
    switch (type) {
      case 'message_start':
        // input and cache counts are final here; output_tokens is a first partial count.
        anthropicUsage(sub(data.message, 'usage'), acc, false);
        break;
      case 'content_block_start': {
        const b = data.content_block;
        if (isObj(b)) {
          acc.add(b.text);
          if (b.type === 'tool_use' || b.type === 'server_tool_use') acc.add(b.name);
        }
        break;
      }
      case 'content_block_delta': {
        const d = data.delta;
        if (isObj(d)) {
          acc.add(d.text);
          acc.add(d.partial_json);
          acc.add(d.thinking);
        }
        break;
      }
      case 'message_delta':
        // Cumulative output_tokens; the last message_delta of a message is its final count.
        anthropicUsage(data.usage, acc, true);
        break;
    }
  },
  usage: (u, acc, final) => void anthropicUsage(u, acc, final),
};

// ---------------------------------------------------------------------------------------------
// Gemini
// ---------------------------------------------------------------------------------------------

function geminiUsage(u: unknown, acc: UsageAcc, final: boolean): boolean {
  if (!isObj(u)) return false;
  const prompt = num(u.promptTokenCount);
  const candidates = num(u.candidatesTokenCount);
  const thoughts = num(u.thoughtsTokenCount) ?? 0;
  if (prompt !== undefined) {
    const tool = num(u.toolUsePromptTokenCount) ?? 0;
    acc.setPrompt(prompt + tool, num(u.cachedContentTokenCount) ?? 0, 0);
  }
  const out = (candidates ?? 0) + thoughts;
  // proto3 JSON omits zero counts: a final usage with a prompt count but no candidatesTokenCount
  // means no output tokens.
  if (candidates !== undefined || thoughts > 0 || (final && prompt !== undefined)) {
    acc.setOutput(out, thoughts, final);
  }
  return prompt !== undefined || candidates !== undefined;
}

function geminiCandidates(body: unknown, acc: UsageAcc): boolean {
  let finished = false;
  for (const c of arr(sub(body, 'candidates'))) {
    if (!isObj(c)) continue;
    if (typeof c.finishReason === 'string' && c.finishReason !== 'FINISH_REASON_UNSPECIFIED') finished = true;
    for (const p of arr(sub(c.content, 'parts'))) {
      if (!isObj(p)) continue;
      acc.add(p.text);
      const fc = p.functionCall;
      if (isObj(fc)) {
        acc.add(fc.name);
        if (fc.args !== undefined) {
          try {
            acc.add(JSON.stringify(fc.args));
          } catch {
            // unserialisable: skip
          }
        }
      }
    }
  }
  return finished;
}

/** One GenerateContentResponse (a whole body, an SSE chunk or an element of a streamed JSON array). */
function geminiChunk(chunk: unknown, acc: UsageAcc, forceFinal: boolean): boolean {
  const finished = geminiCandidates(chunk, acc);
  return geminiUsage(sub(chunk, 'usageMetadata'), acc, forceFinal || finished);
}

const geminiFormat: Format = {
  usageKeys: ['usageMetadata'],
  overLongEventFinal: false,
  json(body, acc) {
    if (Array.isArray(body)) {
      // streamGenerateContent without alt=sse: a JSON array of chunks; usage is cumulative.
      let any = false;
      for (let i = 0; i < body.length; i++) any = geminiChunk(body[i], acc, false) || any;
      if (any && !acc.output) {
        // No chunk marked finished but the array is complete: the last usage is the final one.
        const last = [...body].reverse().find((c) => isObj(sub(c, 'usageMetadata')));
        geminiUsage(sub(last, 'usageMetadata'), acc, true);
      }
      return any;
    }
    return geminiChunk(body, acc, true);
  },
  event(_event, data, acc) {
    geminiChunk(data, acc, false);
  },
  usage: (u, acc, final) => void geminiUsage(u, acc, final),
};

export function formatFor(dialect: UsageDialect): Format {
  switch (dialect) {
    case 'openai.chat':
    case 'openai.completions':
    case 'openai.embeddings':
      return openaiFormat;
    case 'openai.responses':
      return responsesFormat;
    case 'anthropic.messages':
      return anthropicFormat;
    case 'gemini.generateContent':
      return geminiFormat;
  }
}
