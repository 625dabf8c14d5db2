/**
 * The BPE rank table of one encoding, built from tiktoken's own rank files into one
 * SharedArrayBuffer that the main thread and every token worker share (one copy, ~6 MB for
 * o200k_base, instead of a ~60-80 MB JavaScript Map per thread), and looked up by hash without
 * allocating. The counter itself is in bpe.ts.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { PATTERNS } from './pretokenize.js';

const HEADER_WORDS = 4; // [magic, entries, slotBits, poolBytes]
const MAGIC = 0x42504532; // "BPE2"
export const SLOT_WORDS = 4;

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
export const PIECE_CACHE_BITS = 11;
export const PIECE_CACHE_MASK = (1 << PIECE_CACHE_BITS) - 1;
export const PIECE_CACHE_STRIDE = 6;
export const PIECE_CACHE_MAX = 16;

export function fnv(bytes: Uint8Array, start: number, end: number): number {
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

export const NO_RANK = 0xffffffff;

/** Rank of bytes[start, end) given its hash, or NO_RANK. */
export function lookup(t: BpeTable, bytes: Uint8Array, start: number, end: number, h: number): number {
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

export function rankOf(t: BpeTable, bytes: Uint8Array, start: number, end: number): number {
  return lookup(t, bytes, start, end, fnv(bytes, start, end));
}
