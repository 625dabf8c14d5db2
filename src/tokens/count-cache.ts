/**
 * A bounded cache of token counts by content, so a prompt that resends text counted before (an agent's
 * whole history on every turn) costs a hash per piece instead of a BPE pass.
 *
 * Key: SHA-256 of the text (all 256 bits), after one character naming the caller's key space (which
 * counter, what the text stands for) and how the text was hashed. The texts themselves are never retained.
 *  - Well-formed strings are hashed as UTF-8, which is injective on them. A string with a lone
 *    surrogate (which UTF-8 would turn into U+FFFD, merging it with other strings) is hashed as its
 *    UTF-16 code units instead, under a different tag byte.
 *  - SHA-256 rather than a faster non-cryptographic hash: request texts are chosen by clients, and a
 *    client able to make two texts collide could have a long text charged as a short one. MD5 and
 *    SHA-1 have practical chosen-prefix collisions; SHA-256 has no known collision. With SHA extensions it hashes at ~1-2 GB/s, 30× faster than BPE counts.
 *
 * Bound: at most MAX_ENTRIES entries per thread (least recently used evicted first), i.e. about
 * CACHE_BUDGET_BYTES of key strings and map slots. Each thread (the event loop, every token worker)
 * has its own cache. Only texts of at least CACHE_MIN_CHARS are cached: below it, counting costs less
 * than hashing (bench/count-cache-bench.ts).
 */
import { hash } from 'node:crypto';

/** Texts shorter than this (UTF-16 units) are counted, not looked up. */
export const CACHE_MIN_CHARS = 256;

/** Memory the cache may use per thread (estimate: key string + Map slot per entry). */
export const CACHE_BUDGET_BYTES = 8 * 1024 * 1024;

/** Generous estimate of one entry's memory: a 33-char key (flattened cons string, ~80 B) and its Map slot. */
export const ENTRY_BYTES = 128;

export const MAX_ENTRIES = Math.floor(CACHE_BUDGET_BYTES / ENTRY_BYTES);

/** String.prototype.isWellFormed (ES2024, in Node 20; not in this project's TypeScript lib). */
interface WellFormed {
  isWellFormed(): boolean;
}

/** One-character key prefixes, by tag byte. */
const TAG_CHARS = Array.from({ length: 256 }, (_, i) => String.fromCharCode(i));

/**
 * The digest key of `text` under `tag` (0..127: the caller's key space, e.g. which counter and what
 * the text stands for; keys of different tags never match): a tag character, then the 32 digest
 * bytes as a Latin-1 ('binary') string (one native call; half the cost of a Buffer digest turned into a key).
 */
export function digestKey(tag: number, text: string): string {
  if ((text as unknown as WellFormed).isWellFormed())
    return TAG_CHARS[tag * 2] + hash('sha256', text, 'binary');
  return TAG_CHARS[tag * 2 + 1] + hash('sha256', Buffer.from(text, 'utf16le'), 'binary');
}

/** A least-recently-used map from digest keys to counts, bounded by entry count. */
export class CountCache {
  private readonly map = new Map<string, number>();
  hits = 0;
  misses = 0;

  constructor(readonly maxEntries: number = MAX_ENTRIES) {}

  get size(): number {
    return this.map.size;
  }

  /** The count of `text` under `tag`, computed with `count` when not cached. */
  count(tag: number, text: string, count: (t: string) => number): number {
    if (!Number.isInteger(tag) || tag < 0 || tag > 127) throw new RangeError(`count cache tag ${tag}`);
    const key = digestKey(tag, text);
    const map = this.map;
    const v = map.get(key);
    if (v !== undefined) {
      this.hits++;
      map.delete(key); // most recently used last
      map.set(key, v);
      return v;
    }
    this.misses++;
    const n = count(text);
    map.set(key, n);
    if (map.size > this.maxEntries) map.delete(map.keys().next().value as string);
    return n;
  }

  clear(): void {
    this.map.clear();
    this.hits = 0;
    this.misses = 0;
  }
}
