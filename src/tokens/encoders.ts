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
  if (!isEncodingName(name)) throw new Error(`unknown token encoding "${name}" (expected one of ${ENCODINGS.join(', ')})`);
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
 * Count tokens of `text` as plain text (special-token strings such as `<|endoftext|>` are counted as
 * ordinary text, which is how the APIs treat user content; `encode()` would throw on them).
 *
 * Texts longer than CHUNK_CHARS are split into chunks and the chunk counts summed; this bounds the
 * cost of BPE on pathological inputs (BPE merging is super-linear in the length of a single
 * pre-token, e.g. a 1 MB run without whitespace). Chunks are cut at whitespace boundaries where the
 * pre-tokenizer splits anyway, so for normal prose/code the result equals whole-text encoding. Only
 * when a window has no such boundary (a whitespace-free run, or newline-only whitespace, longer than
 * ~4-8 KB) is the text cut at a fixed size (never inside a surrogate pair); that may differ from
 * whole-text encoding by a handful of tokens per cut.
 */
export function countText(enc: Tiktoken, text: string): number {
  const len = text.length;
  if (len === 0) return 0;
  if (len <= CHUNK_CHARS) return enc.encode_ordinary(text).length;
  let total = 0;
  let start = 0;
  while (start < len) {
    if (len - start <= CHUNK_CHARS) {
      total += enc.encode_ordinary(text.slice(start)).length;
      break;
    }
    let cut = findSplit(text, start, start + CHUNK_CHARS);
    if (cut < 0) {
      cut = start + CHUNK_CHARS;
      const c = text.charCodeAt(cut);
      if (c >= 0xdc00 && c <= 0xdfff) cut--; // don't split a surrogate pair
    }
    total += enc.encode_ordinary(text.slice(start, cut)).length;
    start = cut;
  }
  return total;
}
