/**
 * A compact byte-pair-encoding token counter whose rank table lives in one SharedArrayBuffer, so the
 * main thread and every token worker share a single copy (~6 MB for o200k_base) instead of each
 * building a ~60-80 MB JavaScript Map of 200k strings.
 *
 * The table is built from tiktoken's own rank files (node_modules/tiktoken/encoders/<name>.json, the
 * same data tiktoken's WASM encoder loads); counting follows tiktoken's `_byte_pair_merge` exactly:
 * split the text with the encoding's pre-tokenizer regex, count a pre-token whose UTF-8 bytes are a
 * token as 1, otherwise merge the lowest-ranked adjacent pair until no pair is a token and count the
 * parts. test/tokens-fast.test.ts proves the counts equal tiktoken's on a varied corpus and on random
 * strings for every encoding.
 *
 * The hot loop allocates nothing for pre-tokens that are single tokens (most of prose and code): the
 * pre-token's bytes are hashed straight from the string's char codes into a scratch buffer.
 *
 * Files: bpe-table.ts (the shared rank table and its lookups), pretokenize.ts (the encodings'
 * pre-tokenizers), this file (merging and counting).
 */
import {
  type BpeTable,
  fnv,
  lookup,
  NO_RANK,
  PIECE_CACHE_BITS,
  PIECE_CACHE_MASK,
  PIECE_CACHE_MAX,
  PIECE_CACHE_STRIDE,
  rankOf,
  SLOT_WORDS,
} from './bpe-table.js';
import { ASCII_MATCHERS, NEED_REGEX } from './pretokenize.js';

export { type BpeTable, buildTable, view } from './bpe-table.js';

// Per-thread scratch space (counting is synchronous, so one set per thread suffices).
let scratch = new Uint8Array(1024);
let partStart = new Int32Array(1024);
let partRank = new Float64Array(1024);

/** tiktoken's _byte_pair_merge over scratch[0, n): the number of tokens. */
function mergeCount(t: BpeTable, n: number): number {
  if (n === 1) return 1;
  if (partStart.length < n + 1) {
    partStart = new Int32Array(n * 2 + 2);
    partRank = new Float64Array(n * 2 + 2);
  }
  const bytes = scratch;
  const st = partStart;
  const rk = partRank;
  let len = n + 1; // parts: (start, rank of part i merged with part i+1)
  let min = NO_RANK;
  let minAt = -1;
  for (let i = 0; i < n - 1; i++) {
    const r = rankOf(t, bytes, i, i + 2);
    st[i] = i;
    rk[i] = r;
    if (r < min) {
      min = r;
      minAt = i;
    }
  }
  st[n - 1] = n - 1;
  rk[n - 1] = NO_RANK;
  st[n] = n;
  rk[n] = NO_RANK;
  while (min !== NO_RANK) {
    const i = minAt;
    // rank of parts i..i+2 merged (after removing i+1), i.e. bytes[st[i], st[i+3])
    if (i > 0) rk[i - 1] = i + 2 < len ? rankOf(t, bytes, st[i - 1], st[i + 2]) : NO_RANK;
    rk[i] = i + 3 < len ? rankOf(t, bytes, st[i], st[i + 3]) : NO_RANK;
    for (let j = i + 1; j < len - 1; j++) {
      st[j] = st[j + 1];
      rk[j] = rk[j + 1];
    }
    len--;
    min = NO_RANK;
    minAt = -1;
    for (let j = 0; j < len - 1; j++) {
      if (rk[j] < min) {
        min = rk[j];
        minAt = j;
      }
    }
  }
  return len - 1;
}

/**
 * UTF-8 bytes of text[start, end) into `scratch` (lone surrogates become U+FFFD, as TextEncoder and
 * tiktoken's JS bindings do); returns the byte length.
 */
function utf8(text: string, start: number, end: number): number {
  if (scratch.length < (end - start) * 3 + 4) scratch = new Uint8Array((end - start) * 6 + 8);
  const b = scratch;
  let n = 0;
  for (let i = start; i < end; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) b[n++] = c;
    else if (c < 0x800) {
      b[n++] = 0xc0 | (c >> 6);
      b[n++] = 0x80 | (c & 63);
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i + 1 < end ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
          b[n++] = 0xf0 | (c >> 18);
          b[n++] = 0x80 | ((c >> 12) & 63);
          b[n++] = 0x80 | ((c >> 6) & 63);
          b[n++] = 0x80 | (c & 63);
          continue;
        }
        c = 0xfffd;
      }
      b[n++] = 0xe0 | (c >> 12);
      b[n++] = 0x80 | ((c >> 6) & 63);
      b[n++] = 0x80 | (c & 63);
    }
  }
  return n;
}

/**
 * Tokens of an all-ASCII pre-token text[start, end). Its UTF-8 bytes are its char codes, so it is
 * hashed and compared with the table straight from the string; only a pre-token that is not one
 * token is copied out for merging.
 */
function countAsciiPiece(t: BpeTable, text: string, start: number, end: number): number {
  return countAsciiHashed(t, text, start, end, fnvAscii(text, start, end));
}

/** FNV-1a of the ASCII characters text[start, end) (their UTF-8 bytes are their char codes). */
function fnvAscii(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The piece-cache entry an ASCII pre-token maps to (tests use it to make entries collide). */
export function pieceCacheSlot(piece: string): number {
  return (fnvAscii(piece, 0, piece.length) >>> PIECE_CACHE_BITS) & PIECE_CACHE_MASK;
}

/** Four ASCII characters text[i, min(i + 4, end)) packed little-endian (zero-padded). */
function pack4(text: string, i: number, end: number): number {
  let w = 0;
  for (let k = 0; k < 4 && i + k < end; k++) w |= text.charCodeAt(i + k) << (8 * k);
  return w >>> 0;
}

/** countAsciiPiece with the FNV-1a hash of text[start, end) already computed. */
function countAsciiHashed(t: BpeTable, text: string, start: number, end: number, h: number): number {
  const n = end - start;
  let pre = text.charCodeAt(start);
  if (n > 1) pre |= text.charCodeAt(start + 1) << 8;
  if (n > 2) pre |= text.charCodeAt(start + 2) << 16;
  if (n > 3) pre |= text.charCodeAt(start + 3) << 24;
  pre >>>= 0;
  if (n > PIECE_CACHE_MAX) return countAsciiTable(t, text, start, end, h, pre);
  const c = t.cache;
  const e = ((h >>> PIECE_CACHE_BITS) & PIECE_CACHE_MASK) * PIECE_CACHE_STRIDE;
  if (
    c[e] === h &&
    (c[e + 1] & 255) === n &&
    c[e + 2] === pre &&
    (n <= 4 || c[e + 3] === pack4(text, start + 4, end)) &&
    (n <= 8 || c[e + 4] === pack4(text, start + 8, end)) &&
    (n <= 12 || c[e + 5] === pack4(text, start + 12, end))
  )
    return c[e + 1] >>> 8;
  const count = countAsciiTable(t, text, start, end, h, pre);
  c[e] = h;
  c[e + 1] = n | (count << 8);
  c[e + 2] = pre;
  c[e + 3] = n > 4 ? pack4(text, start + 4, end) : 0;
  c[e + 4] = n > 8 ? pack4(text, start + 8, end) : 0;
  c[e + 5] = n > 12 ? pack4(text, start + 12, end) : 0;
  return count;
}

/** Tokens of the ASCII pre-token text[start, end) from the rank table (hash h, first four chars pre). */
function countAsciiTable(
  t: BpeTable,
  text: string,
  start: number,
  end: number,
  h: number,
  pre: number,
): number {
  const n = end - start;
  const { slots, mask } = t;
  for (let s = h & mask; ; s = (s + 1) & mask) {
    const w = s * SLOT_WORDS;
    if (slots[w + 1] === 0) break;
    if (slots[w] !== h || slots[w + 3] !== pre) continue;
    const ol = slots[w + 2];
    if ((ol & 255) !== n) continue;
    if (n <= 4) return 1;
    const pool = t.pool;
    const a = ol >>> 8;
    let i = 4;
    while (i < n && pool[a + i] === text.charCodeAt(start + i)) i++;
    if (i === n) return 1;
  }
  if (scratch.length < n) scratch = new Uint8Array(n * 2 + 8);
  const b = scratch;
  for (let i = 0; i < n; i++) b[i] = text.charCodeAt(start + i);
  return mergeCount(t, n);
}

/** Tokens of one pre-token text[start, end) (bytes via the scratch buffer). */
function countPiece(t: BpeTable, text: string, start: number, end: number): number {
  const n = utf8(text, start, end);
  return lookup(t, scratch, 0, n, fnv(scratch, 0, n)) !== NO_RANK ? 1 : mergeCount(t, n);
}

/**
 * Count the tokens of `text` as ordinary text (special-token strings are plain text), exactly as
 * tiktoken's encode_ordinary does.
 *
 * `maxPiece` bounds the work on hostile input: BPE merging is quadratic in the length of a pre-token
 * (an 8 KB run of letters without a space or punctuation mark), so a pre-token longer than `maxPiece`
 * UTF-16 units is counted in pieces of `maxPiece / 2` units (never splitting a surrogate pair). Such
 * pre-tokens do not occur in prose, code or JSON; for them the count may differ from tiktoken's by
 * about a token per cut.
 */
export function countBpe(t: BpeTable, text: string, maxPiece = Number.POSITIVE_INFINITY): number {
  const re = t.regex;
  const ascii = ASCII_MATCHERS[t.name];
  const len = text.length;
  let pos = 0;
  let count = 0;
  // Fast path for the commonest pre-token, an ASCII word with at most one leading space (" the",
  // "token"): scanned and hashed in one pass. The word's letters are o200k's [\p{Ll}]+ (a-z; an
  // upper-case start takes the general path) or cl100k's \p{L}+ (A-Z and a-z). Anything the fast
  // path cannot decide for sure (a non-ASCII character or o200k's contraction quote next) goes the
  // general way from the same position.
  const fast = t.name === 'o200k_base' ? 1 : t.name === 'cl100k_base' ? 2 : 0;
  while (pos < len) {
    if (fast !== 0) {
      let j = pos;
      let c = text.charCodeAt(j);
      let h = 0x811c9dc5;
      if (c === 32) {
        h = Math.imul(h ^ 32, 0x01000193);
        c = text.charCodeAt(++j);
      }
      if ((c >= 97 && c <= 122) || (fast === 2 && c >= 65 && c <= 90)) {
        for (;;) {
          h = Math.imul(h ^ c, 0x01000193);
          c = text.charCodeAt(++j);
          if (c >= 97 && c <= 122) continue;
          if (fast === 2 && c >= 65 && c <= 90) continue;
          break;
        }
        // Ends the word for sure: end of text, or an ASCII char other than o200k's contraction quote.
        // (cl100k: upper case continues a word and was consumed; o200k: it starts the next one.)
        if ((j >= len || (c < 128 && (fast === 2 || c !== 39))) && j - pos <= maxPiece) {
          count += countAsciiHashed(t, text, pos, j, h >>> 0);
          pos = j;
          continue;
        }
      }
    }
    let end = ascii ? ascii(text, pos) : NEED_REGEX;
    if (end !== NEED_REGEX && end - pos <= maxPiece) {
      // The ASCII matchers only return pre-tokens made of ASCII characters.
      count += countAsciiPiece(t, text, pos, end);
      pos = end;
      continue;
    }
    if (end === NEED_REGEX) {
      re.lastIndex = pos;
      if (!re.test(text)) {
        // Not matched by any alternative (cannot happen with these patterns: every code point is
        // a letter, number, space or other); skip one code point, as a global search would.
        const c = text.charCodeAt(pos);
        pos += c >= 0xd800 && c <= 0xdbff && pos + 1 < len ? 2 : 1;
        continue;
      }
      end = re.lastIndex;
    }
    if (end - pos <= maxPiece) {
      count += countPiece(t, text, pos, end);
    } else {
      const step = Math.max(2, maxPiece >> 1);
      for (let a = pos; a < end; ) {
        let b = Math.min(end, a + step);
        const c = text.charCodeAt(b - 1);
        if (b < end && c >= 0xd800 && c <= 0xdbff) b++; // keep a surrogate pair together
        count += countPiece(t, text, a, b);
        a = b;
      }
    }
    pos = end;
  }
  return count;
}
