/**
 * Process-wide token counters. Building an encoding's tables costs tens to hundreds of milliseconds,
 * so each encoding is built once (lazily) per process and reused for every request; nothing is freed.
 *
 * Two implementations:
 *  - tiktoken (WASM): the reference. `getEncoder` always returns it (loaded only when asked for).
 *  - bpe.ts: a compact BPE counter over tiktoken's own rank files whose table lives in a
 *    SharedArrayBuffer, so the main thread and every token worker share one copy (~7 MB for
 *    o200k_base instead of ~70 MB of JavaScript strings per thread), with hand-written ASCII
 *    pre-tokenizers for cl100k/o200k. `getCounter` serves it for the encodings in FAST_ENCODINGS;
 *    test/tokens-fast.test.ts proves its counts equal tiktoken's on a varied corpus and on random
 *    Unicode strings for each of them. TOLLGATE_TOKENIZER=tiktoken forces the reference everywhere.
 */
import { createRequire } from 'node:module';
import type { Tiktoken, TiktokenEncoding } from 'tiktoken';
import { settings } from '../settings.js';
import { type BpeTable, buildTable, countBpe, view } from './bpe.js';

export const ENCODINGS = ['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as const;
export type EncodingName = (typeof ENCODINGS)[number];

const cache = new Map<EncodingName, Tiktoken>();
const requireCjs = createRequire(import.meta.url);

export function isEncodingName(name: string): name is EncodingName {
  return (ENCODINGS as readonly string[]).includes(name);
}

/** The shared tiktoken encoder for `name`; throws for an unknown encoding name (a configuration error). */
export function getEncoder(name: string): Tiktoken {
  if (!isEncodingName(name))
    throw new Error(`unknown token encoding "${name}" (expected one of ${ENCODINGS.join(', ')})`);
  let enc = cache.get(name);
  if (!enc) {
    const { get_encoding } = requireCjs('tiktoken') as typeof import('tiktoken');
    enc = get_encoding(name as TiktokenEncoding);
    cache.set(name, enc);
  }
  return enc;
}

/** Counts the tokens of a text encoded as ordinary text (special-token strings are plain text). */
export type CountFn = (text: string) => number;

export interface TokenCounter {
  readonly encoding: EncodingName;
  readonly impl: 'bpe' | 'tiktoken';
  readonly count: CountFn;
  /**
   * Count with the work per pre-token bounded (see countBpe's maxPiece); the shared-table counter
   * has it, so countText needs no text-level scan or cuts for it.
   */
  readonly countGuarded?: CountFn;
}

/** Encodings served by bpe.ts: those whose counts equal tiktoken's on the equality corpus. */
export const FAST_ENCODINGS: ReadonlySet<EncodingName> = new Set<EncodingName>([
  'o200k_base',
  'cl100k_base',
  'p50k_base',
  'r50k_base',
]);

const counters = new Map<EncodingName, TokenCounter>();
const tables = new Map<EncodingName, SharedArrayBuffer>();

function fastEnabled(): boolean {
  return settings().tokenizer !== 'tiktoken';
}

/** Whether the hot path counts `name` with the shared-table counter (else with tiktoken). */
export function usesSharedTable(name: string): name is EncodingName {
  return isEncodingName(name) && fastEnabled() && FAST_ENCODINGS.has(name);
}

/** The reference (tiktoken) counter for `name`. */
export function referenceCounter(name: string): TokenCounter {
  const enc = getEncoder(name);
  return { encoding: name as EncodingName, impl: 'tiktoken', count: (t) => enc.encode_ordinary(t).length };
}

/** The shared rank table of `name`, built on first use (a worker receives it from its parent). */
export function sharedTable(name: EncodingName): SharedArrayBuffer {
  let t = tables.get(name);
  if (!t) {
    t = buildTable(name);
    tables.set(name, t);
  }
  return t;
}

/** Install a table built by another thread (token workers), so this thread does not build its own. */
export function installTable(name: EncodingName, shared: SharedArrayBuffer): void {
  if (!tables.has(name)) tables.set(name, shared);
}

/** The shared-table BPE counter for `name` (synchronous; builds the table on first use). */
export function fastCounter(name: EncodingName): TokenCounter {
  const table: BpeTable = view(name, sharedTable(name));
  return {
    encoding: name,
    impl: 'bpe',
    count: (t) => countBpe(table, t),
    countGuarded: (t) => countBpe(table, t, MAX_PIECE),
  };
}

/**
 * The counter the hot path uses for `name`: bpe.ts for FAST_ENCODINGS (unless
 * TOLLGATE_TOKENIZER=tiktoken), else tiktoken. Throws for an unknown encoding name.
 */
export function getCounter(name: string): TokenCounter {
  if (!isEncodingName(name))
    throw new Error(`unknown token encoding "${name}" (expected one of ${ENCODINGS.join(', ')})`);
  let c = counters.get(name);
  if (!c) {
    c = usesSharedTable(name) ? fastCounter(name) : referenceCounter(name);
    counters.set(name, c);
  }
  return c;
}

function countFn(enc: Tiktoken | TokenCounter): CountFn {
  if ('count' in enc) return enc.count;
  return (t) => enc.encode_ordinary(t).length;
}

/** Texts longer than this many UTF-16 code units are encoded in chunks. */
export const CHUNK_CHARS = 8192;

function isWs(c: number): boolean {
  // Unicode White_Space (what `\s` matches in the tiktoken pre-tokenizer regexes).
  return (
    c === 32 ||
    (c >= 9 && c <= 13) ||
    c === 0x85 ||
    c === 0xa0 ||
    c === 0x1680 ||
    (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 ||
    c === 0x2029 ||
    c === 0x202f ||
    c === 0x205f ||
    c === 0x3000
  );
}

function isNewline(c: number): boolean {
  return c === 10 || c === 13;
}

/**
 * Find a split index in (start, limit]: the start of a whitespace run that begins with a non-newline
 * space and follows a non-whitespace character. At such a point the cl100k/o200k pre-tokenizers
 * always end a pre-token (a punctuation pre-token may absorb trailing \r\n, never a space), and the
 * whitespace run plus the following word land in the same chunk, so chunked == whole encoding.
 * Searches back at most half a chunk; returns -1 if none.
 */
function findSplit(text: string, start: number, limit: number): number {
  const floor = start + (CHUNK_CHARS >> 1);
  for (let i = limit; i > floor; i--) {
    const c = text.charCodeAt(i);
    if (isWs(c) && !isNewline(c) && !isWs(text.charCodeAt(i - 1))) return i;
  }
  return -1;
}

/**
 * Longest run of one character class encoded without a cut. tiktoken's BPE is quadratic in the
 * length of a pre-token (e.g. an 8 KB run of CJK letters without punctuation takes ~0.7 s), and
 * pre-tokens are unions of at most two runs of the classes below, so cutting every class run at
 * MAX_RUN chars bounds the work per character. Normal prose and code never contain such runs.
 */
export const MAX_RUN = 128;

/**
 * The shared-table counter's bound: pre-tokens longer than this many UTF-16 units are counted in
 * MAX_RUN-unit pieces. A pre-token is at most two class runs plus a few characters, so in text
 * without class runs longer than MAX_RUN no pre-token reaches it.
 */
export const MAX_PIECE = 2 * MAX_RUN + 8;

/** Character classes whose runs make up tiktoken pre-tokens (cl100k_base and o200k_base). */
const RUN_CLASSES: readonly RegExp[] = [
  /[\p{L}\p{M}]+/gu, // letter pre-tokens
  /[^\s\p{L}\p{N}]+/gu, // punctuation / symbol pre-tokens (incl. marks for cl100k, lone surrogates)
  /\s+/gu, // whitespace pre-tokens
  /[\r\n/]+/gu, // trailing part of o200k/cl100k punctuation pre-tokens
];

function safeCut(text: string, i: number): number {
  const c = text.charCodeAt(i);
  return c >= 0xdc00 && c <= 0xdfff ? i - 1 : i; // never split a surrogate pair
}

/**
 * Cheap pre-check: every class run above lies inside a run of non-whitespace, of whitespace, or of
 * [\r\n/] (in UTF-16 units, as MAX_RUN is measured), so when none of those is longer than MAX_RUN no
 * class run is either and the four Unicode-class scans can be skipped (the common case: prose,
 * code, JSON). Measured here: the scans cost ~1.6 ms per 20 KB of prose, more than counting it.
 */
/** What JavaScript's `\s` matches, exactly: Unicode White_Space without U+0085, plus U+FEFF. */
function jsSpace(c: number): boolean {
  return c === 0xfeff || (c !== 0x85 && isWs(c));
}

/**
 * True when the text has a run longer than MAX_RUN of non-space, of space, or of [\r\n/] characters
 * (same answer as /[^\s]{129}|\s{129}|[\r\n/]{129}/.test, in one linear pass: the regex with
 * counted repetition cost ~40% as much as counting the tokens of a small prompt).
 */
export function hasLongRun(text: string): boolean {
  let nonSpace = 0;
  let space = 0;
  let slashNl = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 128 ? c === 32 || (c >= 9 && c <= 13) : jsSpace(c)) {
      space++;
      nonSpace = 0;
    } else {
      nonSpace++;
      space = 0;
    }
    if (c === 10 || c === 13 || c === 47) slashNl++;
    else slashNl = 0;
    if (nonSpace > MAX_RUN || space > MAX_RUN || slashNl > MAX_RUN) return true;
  }
  return false;
}

/** Positions (sorted, unique) where class runs longer than MAX_RUN are cut. */
function runCuts(text: string): number[] {
  const cuts: number[] = [];
  if (!hasLongRun(text)) return cuts;
  for (const proto of RUN_CLASSES) {
    const re = new RegExp(proto.source, proto.flags);
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const end = re.lastIndex;
      for (let i = m.index + MAX_RUN; i < end; i += MAX_RUN) cuts.push(safeCut(text, i));
    }
  }
  if (cuts.length > 1) cuts.sort((a, b) => a - b);
  return cuts;
}

/** Encode text[start, end) in chunks of at most CHUNK_CHARS, cut at whitespace boundaries if possible. */
function countChunked(count: CountFn, text: string, start: number, end: number): number {
  let total = 0;
  while (start < end) {
    if (end - start <= CHUNK_CHARS) {
      total += count(start === 0 && end === text.length ? text : text.slice(start, end));
      break;
    }
    let cut = findSplit(text, start, start + CHUNK_CHARS);
    if (cut < 0) cut = safeCut(text, start + CHUNK_CHARS);
    total += count(text.slice(start, cut));
    start = cut;
  }
  return total;
}

/**
 * Count tokens of `text` as plain text (special-token strings such as `<|endoftext|>` are counted as
 * ordinary text, which is how the APIs treat user content; `encode()` would throw on them).
 *
 * The shared-table counter streams any length and bounds its own work per pre-token (countGuarded:
 * pre-tokens longer than MAX_PIECE are counted in MAX_RUN pieces). For tiktoken (the reference),
 * two guards bound the cost on hostile input; both sum the token counts of separately encoded pieces:
 *  1. Texts longer than CHUNK_CHARS are encoded in chunks cut at whitespace boundaries where the
 *     pre-tokenizer splits anyway (so for normal prose/code the result equals whole-text encoding);
 *     only a window without such a boundary is cut at a fixed size.
 *  2. A run of a single character class (letters, symbols, whitespace) longer than MAX_RUN chars —
 *     e.g. a 10 KB string without punctuation or spaces, which makes BPE quadratic — is cut every
 *     MAX_RUN chars.
 * Cuts of kind 2 and fixed-size cuts of kind 1 may make the count differ from whole-text encoding
 * by a token or two per cut (pathological input only). Cuts never split a surrogate pair.
 */
export function countText(enc: Tiktoken | TokenCounter, text: string): number {
  const len = text.length;
  if (len === 0) return 0;
  if ('countGuarded' in enc && enc.countGuarded) return enc.countGuarded(text);
  const count = countFn(enc);
  if (len <= MAX_RUN) return count(text);
  const cuts = runCuts(text);
  if (cuts.length === 0) {
    return len <= CHUNK_CHARS ? count(text) : countChunked(count, text, 0, len);
  }
  let total = 0;
  let start = 0;
  for (const cut of cuts) {
    if (cut <= start) continue;
    total += countChunked(count, text, start, cut);
    start = cut;
  }
  return total + countChunked(count, text, start, len);
}
