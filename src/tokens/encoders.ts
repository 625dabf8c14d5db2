/**
 * Process-wide cache of tiktoken encoders. Creating an encoder parses a multi-megabyte BPE table,
 * so each encoding is created once (lazily) per thread and reused for every request; encoders are
 * never freed.
 */
import { get_encoding, type Tiktoken, type TiktokenEncoding } from 'tiktoken';

export const ENCODINGS = ['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as const;
export type EncodingName = (typeof ENCODINGS)[number];

const cache = new Map<EncodingName, Tiktoken>();

export function isEncodingName(name: string): name is EncodingName {
  return (ENCODINGS as readonly string[]).includes(name);
}

/** The shared encoder for `name`; throws for an unknown encoding name (a configuration error). */
export function getEncoder(name: string): Tiktoken {
  if (!isEncodingName(name))
    throw new Error(`unknown token encoding "${name}" (expected one of ${ENCODINGS.join(', ')})`);
  let enc = cache.get(name);
  if (!enc) {
    enc = get_encoding(name as TiktokenEncoding);
    cache.set(name, enc);
  }
  return enc;
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

/** Positions (sorted, unique) where class runs longer than MAX_RUN are cut. */
function runCuts(text: string): number[] {
  const cuts: number[] = [];
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
function countChunked(enc: Tiktoken, text: string, start: number, end: number): number {
  let total = 0;
  while (start < end) {
    if (end - start <= CHUNK_CHARS) {
      total += enc.encode_ordinary(text.slice(start, end)).length;
      break;
    }
    let cut = findSplit(text, start, start + CHUNK_CHARS);
    if (cut < 0) cut = safeCut(text, start + CHUNK_CHARS);
    total += enc.encode_ordinary(text.slice(start, cut)).length;
    start = cut;
  }
  return total;
}

/**
 * Count tokens of `text` as plain text (special-token strings such as `<|endoftext|>` are counted as
 * ordinary text, which is how the APIs treat user content; `encode()` would throw on them).
 *
 * Two guards bound the cost on hostile input; both sum the token counts of separately encoded pieces:
 *  1. Texts longer than CHUNK_CHARS are encoded in chunks cut at whitespace boundaries where the
 *     pre-tokenizer splits anyway (so for normal prose/code the result equals whole-text encoding);
 *     only a window without such a boundary is cut at a fixed size.
 *  2. A run of a single character class (letters, symbols, whitespace) longer than MAX_RUN chars —
 *     e.g. a 10 KB string without punctuation or spaces, which makes BPE quadratic — is cut every
 *     MAX_RUN chars.
 * Cuts of kind 2 and fixed-size cuts of kind 1 may make the count differ from whole-text encoding
 * by a token or two per cut (pathological input only). Cuts never split a surrogate pair.
 */
export function countText(enc: Tiktoken, text: string): number {
  const len = text.length;
  if (len === 0) return 0;
  if (len <= MAX_RUN) return enc.encode_ordinary(text).length;
  const cuts = runCuts(text);
  if (cuts.length === 0) {
    return len <= CHUNK_CHARS ? enc.encode_ordinary(text).length : countChunked(enc, text, 0, len);
  }
  let total = 0;
  let start = 0;
  for (const cut of cuts) {
    if (cut <= start) continue;
    total += countChunked(enc, text, start, cut);
    start = cut;
  }
  return total + countChunked(enc, text, start, len);
}
