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
 * Bound: at most MAX_ENTRIES entries per thread (least recently used dropped first), i.e. about
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

/**
 * A bounded map from digest keys to counts, least recently used out first, in two generations (no
 * per-hit reordering: a hit in the young map is one lookup). New and reused entries go to the young
 * map; when it holds half the entries allowed, it becomes the old map and the previous old map is
 * dropped. So at most maxEntries entries are held, and an entry used within the last maxEntries / 2
 * insertions is always kept.
 */
export class CountCache {
  private young = new Map<string, number>();
  private old = new Map<string, number>();
  private readonly half: number;
  hits = 0;
  misses = 0;

  constructor(readonly maxEntries: number = MAX_ENTRIES) {
    this.half = Math.max(1, Math.floor(maxEntries / 2));
  }

  /** Entries held (a key promoted from the old map to the young one counts twice until dropped). */
  get size(): number {
    return this.young.size + this.old.size;
  }

  /** The count of `text` under `tag`, computed with `count` when not cached. */
  count(tag: number, text: string, count: (t: string) => number): number {
    if (!Number.isInteger(tag) || tag < 0 || tag > 127) throw new RangeError(`count cache tag ${tag}`);
    const key = digestKey(tag, text);
    let v = this.young.get(key);
    if (v !== undefined) {
      this.hits++;
      return v;
    }
    v = this.old.get(key);
    if (v !== undefined) {
      this.hits++;
      this.put(key, v);
      return v;
    }
    this.misses++;
    const n = count(text);
    this.put(key, n);
    return n;
  }

  private put(key: string, v: number): void {
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, v);
  }

  clear(): void {
    this.young = new Map();
    this.old = new Map();
    this.hits = 0;
    this.misses = 0;
  }
}
