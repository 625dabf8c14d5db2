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
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/**
 * Pre-tokenizer patterns: tiktoken's pat_str for each encoding, spelled for JavaScript. Two spellings
 * differ from the Rust originals so that JavaScript matches exactly what tiktoken matches:
 *  - `\s` / `\S` are explicit Unicode White_Space classes (Rust's `\s`): JavaScript's `\s` also
 *    matches U+FEFF and misses U+0085;
 *  - `(?i:'s|'t|...)` is written out with case classes (JavaScript has no inline flags), including
 *    U+017F (long s), which Rust's Unicode case folding matches for `s`.
 */
const WS = String.raw`\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`;
const S = `[${WS}]`;
const NS = `[^${WS}]`;
const CONTRACTION_CI = String.raw`'(?:[sS\u017f]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])`;
const PATTERNS: Record<string, string> = {
  r50k_base: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${S}+(?!${NS})|${S}+`,
  p50k_base: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${S}+(?!${NS})|${S}+`,
  cl100k_base: String.raw`${CONTRACTION_CI}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^${WS}\p{L}\p{N}]+[\r\n]*|${S}*[\r\n]+|${S}+(?!${NS})|${S}+`,
  o200k_base: String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:${CONTRACTION_CI})?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:${CONTRACTION_CI})?|\p{N}{1,3}| ?[^${WS}\p{L}\p{N}]+[\r\n/]*|${S}*[\r\n]+|${S}+(?!${NS})|${S}+`,
};

const HEADER_WORDS = 4; // [magic, entries, slotBits, poolBytes]
const MAGIC = 0x42504532; // "BPE2"
const SLOT_WORDS = 4;

/**
 * Shared layout (4-byte aligned):
 *   header   Uint32[4]
 *   slots    Uint32[2^slotBits * 4]  per slot: hash, rank + 1 (0 = empty), offset << 8 | length,
 *                                    first four key bytes (little-endian, zero-padded)
 *   pool     Uint8[poolBytes]        key bytes (compared only for keys longer than four bytes)
 * One slot is 16 bytes, so a lookup touches one cache line (plus the pool for long keys): the table
 * is ~4x the size of the data, and open addressing with linear probing keeps probes in that line.
 */
export interface BpeTable {
  readonly name: string;
  readonly shared: SharedArrayBuffer;
  readonly mask: number;
  readonly slots: Uint32Array;
  readonly pool: Uint8Array;
  readonly regex: RegExp;
  /** This thread's cache of recent short ASCII pre-tokens and their counts (see PIECE_CACHE_BITS). */
  readonly cache: Uint32Array;
}

/**
 * A small direct-mapped cache per thread and encoding: ASCII pre-tokens of up to 16 characters and
 * their token counts. Words repeat (Zipf): most pre-tokens of a prompt were seen in the last few
 * thousand, and a hit costs a probe into 48 KB (stays in the CPU's cache) instead of one into the
 * multi-megabyte rank table (a cache miss on a busy host), or a whole BPE merge for a word that is
 * several tokens. Exact: an entry holds the pre-token's characters and is compared in full (the
 * same idea as the word cache in Hugging Face tokenizers' BPE). Per entry (6 words): FNV-1a hash,
 * length | count << 8, then the characters packed four per word (ASCII, little-endian, zero-padded).
 */
const PIECE_CACHE_BITS = 11;
const PIECE_CACHE_MASK = (1 << PIECE_CACHE_BITS) - 1;
const PIECE_CACHE_STRIDE = 6;
const PIECE_CACHE_MAX = 16;

function fnv(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
  return h >>> 0;
}

/** The first (up to) four bytes of bytes[start, end), little-endian. */
function prefix(bytes: Uint8Array, start: number, end: number): number {
  const n = end - start;
  let p = n > 0 ? bytes[start] : 0;
  if (n > 1) p |= bytes[start + 1] << 8;
  if (n > 2) p |= bytes[start + 2] << 16;
  if (n > 3) p |= bytes[start + 3] << 24;
  return p >>> 0;
}

const B64 = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++)
  B64['ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.charCodeAt(i)] = i;

/** Decode base64 text[start, end) into out at offset (no allocation); returns the byte count. */
function decodeB64(text: string, start: number, end: number, out: Uint8Array | null, offset: number): number {
  let n = 0;
  let acc = 0;
  let bits = 0;
  for (let i = start; i < end; i++) {
    const v = B64[text.charCodeAt(i) & 127];
    if (v < 0) continue; // '=' padding
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (out) out[offset + n] = (acc >> bits) & 255;
      n++;
    }
  }
  return n;
}

/**
 * Walk tiktoken's rank file for `name` (node_modules/tiktoken/encoders/<name>.json: lines of
 * "<first token> <first rank> <base64 token> <base64 token> ...", ranks counting up from the first
 * rank, as its JS loaders read it), calling `fn(start, end, rank)` for each base64 token's span of
 * the returned text. No per-token allocation: building a table leaves little garbage behind.
 */
function loadRanks(name: string): {
  text: string;
  each: (fn: (a: number, b: number, rank: number) => void) => void;
} {
  const require = createRequire(import.meta.url);
  const raw = readFileSync(require.resolve(`tiktoken/encoders/${name}.json`), 'utf8');
  const key = '"bpe_ranks":"';
  const from = raw.indexOf(key) + key.length;
  const to = raw.indexOf('"', from);
  if (from < key.length || to < 0) throw new Error(`${name}: unexpected rank file format`);
  const text = raw.slice(from, to).replaceAll('\\n', '\n').replaceAll('\\/', '/');
  const each = (fn: (a: number, b: number, rank: number) => void) => {
    let i = 0;
    while (i < text.length) {
      let eol = text.indexOf('\n', i);
      if (eol < 0) eol = text.length;
      const s1 = text.indexOf(' ', i);
      const s2 = text.indexOf(' ', s1 + 1);
      if (s1 < 0 || s1 > eol || s2 < 0) {
        i = eol + 1;
        continue;
      }
      let rank = Number.parseInt(text.slice(s1 + 1, Math.min(s2, eol)), 10);
      let a = s2 + 1;
      while (a <= eol && s2 < eol) {
        let b = text.indexOf(' ', a);
        if (b < 0 || b > eol) b = eol;
        if (b > a) fn(a, b, rank++);
        a = b + 1;
      }
      i = eol + 1;
    }
  };
  return { text, each };
}

/** Build the shared table of encoding `name` (once per process; ~50-250 ms). */
export function buildTable(name: string): SharedArrayBuffer {
  if (!(name in PATTERNS)) throw new Error(`unknown token encoding "${name}"`);
  const { text, each } = loadRanks(name);
  let n = 0;
  let poolBytes = 0;
  let longest = 0;
  each((a, b) => {
    const len = decodeB64(text, a, b, null, 0);
    n++;
    poolBytes += len;
    if (len > longest) longest = len;
  });
  if (n === 0) throw new Error(`${name}: no ranks in the rank file`);
  if (longest > 255) throw new Error(`${name}: a token longer than 255 bytes`);
  if (poolBytes >= 1 << 24) throw new Error(`${name}: rank data larger than 16 MB`);
  let slotBits = 1;
  while (1 << slotBits < n * 2.5) slotBits++;
  const cap = 1 << slotBits;
  const shared = new SharedArrayBuffer((HEADER_WORDS + cap * SLOT_WORDS) * 4 + poolBytes);
  const header = new Uint32Array(shared, 0, HEADER_WORDS);
  header[0] = MAGIC;
  header[1] = n;
  header[2] = slotBits;
  header[3] = poolBytes;
  const t = view(name, shared);
  let off = 0;
  each((a, b, rank) => {
    const len = decodeB64(text, a, b, t.pool, off);
    const h = fnv(t.pool, off, off + len);
    let s = h & t.mask;
    while (t.slots[s * SLOT_WORDS + 1] !== 0) s = (s + 1) & t.mask;
    const w = s * SLOT_WORDS;
    t.slots[w] = h;
    t.slots[w + 1] = rank + 1;
    t.slots[w + 2] = ((off << 8) | len) >>> 0;
    t.slots[w + 3] = prefix(t.pool, off, off + len);
    off += len;
  });
  return shared;
}

/** Typed-array views over a shared table (in any thread). */
export function view(name: string, shared: SharedArrayBuffer): BpeTable {
  const header = new Uint32Array(shared, 0, HEADER_WORDS);
  if (header[0] !== MAGIC) throw new Error('not a BPE table');
  const cap = 1 << header[2];
  const slots = new Uint32Array(shared, HEADER_WORDS * 4, cap * SLOT_WORDS);
  const pool = new Uint8Array(shared, (HEADER_WORDS + cap * SLOT_WORDS) * 4, header[3]);
  return {
    name,
    shared,
    mask: cap - 1,
    slots,
    pool,
    regex: new RegExp(PATTERNS[name], 'uy'),
    cache: new Uint32Array((PIECE_CACHE_MASK + 1) * PIECE_CACHE_STRIDE),
  };
}

const NO_RANK = 0xffffffff;

/** Rank of bytes[start, end) given its hash, or NO_RANK. */
function lookup(t: BpeTable, bytes: Uint8Array, start: number, end: number, h: number): number {
  const { slots, mask } = t;
  const len = end - start;
  const pre = prefix(bytes, start, end);
  for (let s = h & mask; ; s = (s + 1) & mask) {
    const w = s * SLOT_WORDS;
    const r = slots[w + 1];
    if (r === 0) return NO_RANK;
    if (slots[w] !== h || slots[w + 3] !== pre) continue;
    const ol = slots[w + 2];
    if ((ol & 255) !== len) continue;
    if (len <= 4) return r - 1;
    const pool = t.pool;
    const a = ol >>> 8;
    let i = 4;
    while (i < len && pool[a + i] === bytes[start + i]) i++;
    if (i === len) return r - 1;
  }
}

function rankOf(t: BpeTable, bytes: Uint8Array, start: number, end: number): number {
  return lookup(t, bytes, start, end, fnv(bytes, start, end));
}

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

// ASCII character classes for the hand-written pre-tokenizers below.
const UP = 1; // A-Z
const LO = 2; // a-z
const DIG = 3; // 0-9
const SP = 4; // \t \v \f and space: White_Space, not a newline
const NL = 5; // \r \n
const OTH = 6; // everything else: punctuation, symbols, control characters
const CLASS = new Uint8Array(128).fill(OTH);
for (let c = 65; c <= 90; c++) CLASS[c] = UP;
for (let c = 97; c <= 122; c++) CLASS[c] = LO;
for (let c = 48; c <= 57; c++) CLASS[c] = DIG;
for (const c of [9, 11, 12, 32]) CLASS[c] = SP;
CLASS[10] = NL;
CLASS[13] = NL;

/** Sentinel returned by the ASCII matchers: a non-ASCII character decides this pre-token. */
const NEED_REGEX = -1;

/** Class of text[i]: 0 at the end, NEED_REGEX for non-ASCII. */
function cls(text: string, i: number): number {
  if (i >= text.length) return 0;
  const c = text.charCodeAt(i);
  return c < 128 ? CLASS[c] : NEED_REGEX;
}

/** End of an optional case-insensitive contraction ('s 't 're 've 'm 'll 'd) at i, or i. */
function contraction(text: string, i: number): number {
  if (text.charCodeAt(i) !== 39) return i;
  const a0 = text.charCodeAt(i + 1);
  if (a0 >= 128) return NEED_REGEX; // U+017F (long s) folds to s
  const a = a0 | 0x20;
  if (a === 115 || a === 116 || a === 109 || a === 100) return i + 2; // s t m d
  const b = text.charCodeAt(i + 2) | 0x20;
  if ((a === 114 && b === 101) || (a === 118 && b === 101) || (a === 108 && b === 108)) return i + 3;
  return i;
}

/** `\p{N}{1,3}` at i (text[i] is an ASCII digit). */
function digits(text: string, i: number): number {
  let j = i + 1;
  while (j < i + 3) {
    const c = cls(text, j);
    if (c === DIG) j++;
    else if (c === NEED_REGEX) return NEED_REGEX;
    else break;
  }
  return j;
}

/** End of a run of class k starting at i; NEED_REGEX if the run ends at a non-ASCII character. */
function run(text: string, i: number, k: number): number {
  let c = cls(text, i);
  while (c === k) c = cls(text, ++i);
  return c === NEED_REGEX ? NEED_REGEX : i;
}

/** End of a run of classes a or b starting at i (NEED_REGEX as above). */
function run2(text: string, i: number, a: number, b: number): number {
  let c = cls(text, i);
  while (c === a || c === b) c = cls(text, ++i);
  return c === NEED_REGEX ? NEED_REGEX : i;
}

/** `[\r\n]*` (o200k: `[\r\n/]*`) after i. */
function newlinesAfter(text: string, i: number, slash: boolean): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 10 || c === 13 || (slash && c === 47)) i++;
    else return i;
  }
}

/**
 * The whitespace alternatives shared by cl100k and o200k at i (text[i] is White_Space):
 * `\s*[\r\n]+ | \s+(?!\S) | \s+`.
 */
function whitespace(text: string, i: number): number {
  let j = i;
  let lastNl = -1;
  for (;;) {
    const c = cls(text, j);
    if (c === NL) lastNl = j;
    else if (c !== SP) {
      if (c === NEED_REGEX) return NEED_REGEX;
      break;
    }
    j++;
  }
  if (lastNl >= 0) return lastNl + 1;
  if (j >= text.length || j - i === 1) return j;
  return j - 1;
}

/** End of the o200k_base pre-token at i when ASCII decides it, else NEED_REGEX. */
function o200kAscii(text: string, i: number): number {
  const c = cls(text, i);
  let start = i;
  if (c === OTH || c === SP) {
    // [^\r\n\p{L}\p{N}]? before letters
    const n = cls(text, i + 1);
    if (n === NEED_REGEX) return NEED_REGEX;
    if (n === UP || n === LO) start = i + 1;
    else if (c === OTH || (n === OTH && text.charCodeAt(i) === 32)) {
      // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
      const e = run(text, c === OTH ? i : i + 1, OTH);
      return e === NEED_REGEX ? NEED_REGEX : newlinesAfter(text, e, true);
    } else return whitespace(text, i);
  } else if (c === DIG) return digits(text, i);
  else if (c === NL) return whitespace(text, i);
  else if (c !== UP && c !== LO) return NEED_REGEX;
  // [\p{Lu}...]*[\p{Ll}...]+ | [\p{Lu}...]+[\p{Ll}...]*, then an optional contraction
  const u = run(text, start, UP);
  if (u === NEED_REGEX) return NEED_REGEX;
  const l = run(text, u, LO);
  if (l === NEED_REGEX) return NEED_REGEX;
  return contraction(text, l);
}

/** End of the cl100k_base pre-token at i when ASCII decides it, else NEED_REGEX. */
function cl100kAscii(text: string, i: number): number {
  const c = cls(text, i);
  if (c === OTH) {
    const k = contraction(text, i);
    if (k !== i) return k;
  }
  if (c === OTH || c === SP) {
    const n = cls(text, i + 1);
    if (n === NEED_REGEX) return NEED_REGEX;
    if (n === UP || n === LO) return run2(text, i + 1, UP, LO);
    if (c === OTH || (n === OTH && text.charCodeAt(i) === 32)) {
      const e = run(text, c === OTH ? i : i + 1, OTH);
      return e === NEED_REGEX ? NEED_REGEX : newlinesAfter(text, e, false);
    }
    return whitespace(text, i);
  }
  if (c === UP || c === LO) return run2(text, i, UP, LO);
  if (c === DIG) return digits(text, i);
  if (c === NL) return whitespace(text, i);
  return NEED_REGEX;
}

const ASCII_MATCHERS: Record<string, ((text: string, i: number) => number) | undefined> = {
  o200k_base: o200kAscii,
  cl100k_base: cl100kAscii,
};

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
  // general way from the same position. 10-20% more MB/s on prose (same-process A/B runs).
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
