/**
 * Prompt token counting.
 *
 * Chat formats follow OpenAI's cookbook "How to count tokens with tiktoken"
 * (https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb,
 * sections 6 `num_tokens_from_messages` and 7 `num_tokens_for_tools`), which the cookbook verifies
 * against the API's usage.prompt_tokens for gpt-3.5-turbo, gpt-4, gpt-4o and gpt-4o-mini:
 *
 *   per message: tokens_per_message (3) + tokens of every value (role, content, name) + tokens_per_name (1)
 *   reply priming: +3 (<|start|>assistant<|message|>)
 *   tools (if any): per function func_init + tokens("name:description") [+ prop_init + per property
 *   (prop_key + tokens("key:type:description") [+ enum_init + per item (enum_item + tokens(item))])],
 *   then func_end once; a trailing "." of descriptions is dropped.
 *
 * Extensions beyond the cookbook (it only covers string contents and flat parameter schemas):
 *  - content-part arrays, tool calls, tool results etc. contribute each text piece's tokens;
 *  - schema keys the cookbook ignores (nested properties, items, anyOf, $defs, ...) are counted as
 *    the tokens of their JSON, so that large nested schemas cannot slip past the limiter;
 *  - images count `opts.imageTokens` each; token-id arrays count their length.
 *
 * Anthropic requests are counted with the same chat formula and the configured tiktoken encoding:
 * Anthropic uses its own (unpublished) tokenizer, so this is an estimate only.
 */

import type { ParsedCall, Prompt, ToolDef } from '../dialects/types.js';
import { CACHE_MIN_CHARS, CountCache } from './count-cache.js';
import { countText, getCounter, type TokenCounter } from './encoders.js';

export interface CountOptions {
  /** Tokens charged per image part. */
  imageTokens: number;
}

export const TOKENS_PER_MESSAGE = 3;
export const TOKENS_PER_NAME = 1;
export const REPLY_PRIMING = 3;

/** num_tokens_for_tools constants. The cookbook uses func_init = 7 for gpt-4o/gpt-4o-mini (o200k_base)
 * and 10 for gpt-3.5-turbo/gpt-4 (cl100k_base); other constants are shared. */
export const TOOL_CONSTANTS = {
  o200k_base: { funcInit: 7, propInit: 3, propKey: 3, enumInit: -3, enumItem: 3, funcEnd: 12 },
  cl100k_base: { funcInit: 10, propInit: 3, propKey: 3, enumInit: -3, enumItem: 3, funcEnd: 12 },
} as const;

function toolConstants(encodingName: string) {
  return encodingName === 'cl100k_base' ? TOOL_CONSTANTS.cl100k_base : TOOL_CONSTANTS.o200k_base;
}

function stripDot(s: string): string {
  return s.endsWith('.') ? s.slice(0, -1) : s;
}

/**
 * Counts already seen, by content (count-cache.ts): each text piece of at least CACHE_MIN_CHARS (a
 * message's content part, a completions prompt) and each tool-definition list is counted once per
 * thread while it stays cached; the chat-format overhead is added per message as always, so a cached
 * total is the same number a fresh count gives.
 */
const cache = new CountCache();
/** Each counter object gets its own key space (a tag byte of the key): at most MAX_COUNTERS. */
const counterIds = new WeakMap<TokenCounter, number>();
const MAX_COUNTERS = 32;
let nextCounterId = 0;
/** What a key digests: one text piece, or a tool-definition list as JSON with its encoding name. */
const PIECE = 0;
const TOOL_DEFS = 1;

function cacheTag(enc: TokenCounter, kind: typeof PIECE | typeof TOOL_DEFS): number | undefined {
  let id = counterIds.get(enc);
  if (id === undefined) {
    if (nextCounterId >= MAX_COUNTERS) return undefined;
    id = nextCounterId++;
    counterIds.set(enc, id);
  }
  return id * 2 + kind;
}

/** countText, served from the cache for texts of at least CACHE_MIN_CHARS. */
export function countPiece(enc: TokenCounter, text: string): number {
  if (text.length < CACHE_MIN_CHARS) return countText(enc, text);
  const tag = cacheTag(enc, PIECE);
  return tag === undefined ? countText(enc, text) : cache.count(tag, text, (t) => countText(enc, t));
}

/** The count cache of this thread: hits, misses and size (tests, metrics). */
export function countCacheStats(): { hits: number; misses: number; size: number } {
  return { hits: cache.hits, misses: cache.misses, size: cache.size };
}

/** Empty this thread's count cache (tests: count cold). */
export function clearCountCache(): void {
  cache.clear();
}

export function countToolDefs(enc: TokenCounter, defs: ToolDef[], encodingName: string): number {
  if (defs.length === 0) return 0;
  const json = JSON.stringify([encodingName, defs]);
  if (json.length < CACHE_MIN_CHARS) return countToolDefsFresh(enc, defs, encodingName);
  const tag = cacheTag(enc, TOOL_DEFS);
  if (tag === undefined) return countToolDefsFresh(enc, defs, encodingName);
  return cache.count(tag, json, () => countToolDefsFresh(enc, defs, encodingName));
}

function countToolDefsFresh(enc: TokenCounter, defs: ToolDef[], encodingName: string): number {
  const k = toolConstants(encodingName);
  let n = 0;
  for (const f of defs) {
    n += k.funcInit;
    n += countText(enc, `${f.name}:${stripDot(f.description)}`);
    if (f.properties.length > 0) {
      n += k.propInit;
      for (const p of f.properties) {
        n += k.propKey;
        if (p.enum) {
          n += k.enumInit;
          for (const item of p.enum) n += k.enumItem + countText(enc, item);
        }
        n += countText(enc, `${p.name}:${p.type}:${stripDot(p.description)}`);
        if (p.extra) n += countText(enc, p.extra);
      }
    }
    if (f.extra) n += countText(enc, f.extra);
  }
  return n + k.funcEnd;
}

export function countChat(enc: TokenCounter, prompt: Prompt): number {
  let n = 0;
  for (const m of prompt.messages) {
    n += TOKENS_PER_MESSAGE;
    n += countText(enc, m.role);
    for (const part of m.parts) n += countPiece(enc, part);
    if (m.name !== undefined) n += countText(enc, m.name) + TOKENS_PER_NAME;
  }
  return n + REPLY_PRIMING;
}

/**
 * Count the prompt tokens of a parsed call with the given encoding (tiktoken's counts; served by the
 * fast counter where proven equal, see encoders.ts). Synchronous.
 */
export function countPromptTokens(call: ParsedCall, encodingName: string, opts: CountOptions): number {
  const enc = getCounter(encodingName);
  const p = call.prompt;
  let n = p.preTokenized + p.images * Math.max(0, opts.imageTokens);
  if (p.kind === 'chat') {
    n += countChat(enc, p);
  } else {
    for (const t of p.texts) n += countPiece(enc, t);
  }
  n += countToolDefs(enc, p.toolDefs, encodingName);
  return n;
}
