/**
 * Where the answer cache keeps its answers: the memory store (this process; LRU and TTL, bounded in
 * bytes in total and per scope) or Valkey (answer-valkey.ts; shared by every replica). Values are
 * bytes; what they mean is src/cache/'s business.
 */

export interface AnswerPut {
  /** The scope's id and kind (cache/key.ts scopeOf): bytes are bounded per scope, counted per kind. */
  scope: string;
  kind: string;
  hash: string;
  value: Buffer;
  ttlMs: number;
  scopeMaxBytes: number;
  maxBytes: number;
}

export interface VectorPut {
  scope: string;
  family: string;
  bucket: number;
  hash: string;
  vec: Buffer;
  ttlMs: number;
  /** Vectors kept per bucket (the oldest go first; memory store). */
  maxPerBucket: number;
}

export interface StoredVector {
  hash: string;
  vec: Buffer;
}

/** Answer hashes are sha256 hex: a vector member is the hash, then the float32 bytes. */
export const HASH_CHARS = 64;

export type AnswerPutResult = 'stored' | 'exists' | 'full';

export interface AnswerStore {
  readonly kind: 'memory' | 'valkey';
  get(scope: string, hash: string): Promise<Buffer | undefined>;
  put(p: AnswerPut): Promise<AnswerPutResult>;
  /** The semantic tier: a unit vector (float32 bytes) of an answer's prompt, in its LSH bucket. */
  addVector(v: VectorPut): Promise<void>;
  /** The newest `limit` live vectors of each bucket. */
  vectors(scope: string, family: string, buckets: number[], limit: number): Promise<StoredVector[]>;
  /** Drop every answer of a scope. */
  purge(scope: string): Promise<{ entries: number; bytes: number }>;
  /** Bytes held per scope kind (`kinds`: the ones to read; the memory store knows its own). */
  bytesByKind(kinds: string[]): Promise<Record<string, number>>;
  close(): Promise<void>;
}

/**
 * Per-entry bookkeeping charged on top of the value, so that max_bytes bounds real memory (measured by
 * bench/cache-bench.ts, docs/cache.md): the memory store's key strings, Map slots and Buffer (~420
 * bytes on Node 20); Valkey's hash, its two index members and expiry (~1000 bytes on Valkey 8).
 */
export const MEMORY_ENTRY_OVERHEAD = 512;
export const VALKEY_ENTRY_OVERHEAD = 1024;

interface MemEntry {
  scope: string;
  kind: string;
  hash: string;
  value: Buffer;
  size: number;
  expiresAt: number;
}

/** Process-local answers: a Map in LRU order (a hit moves an entry to the end), per-scope Maps too. */
export class MemoryAnswerStore implements AnswerStore {
  readonly kind = 'memory' as const;
  private readonly all = new Map<string, MemEntry>();
  private readonly scopes = new Map<string, Map<string, MemEntry>>();
  private readonly scopeBytes = new Map<string, number>();
  private readonly kindBytes = new Map<string, number>();
  /** Vectors per scope → "family:bucket" → hash → vector (insertion order: oldest first). */
  private readonly vecs = new Map<string, Map<string, Map<string, { vec: Buffer; expiresAt: number }>>>();
  total = 0;

  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.all.size;
  }

  async get(scope: string, hash: string): Promise<Buffer | undefined> {
    return this.getSync(scope, hash);
  }

  getSync(scope: string, hash: string): Buffer | undefined {
    const k = `${scope}:${hash}`;
    const e = this.all.get(k);
    if (!e) return undefined;
    if (e.expiresAt <= this.now()) {
      this.drop(e);
      return undefined;
    }
    // least recently used first: a hit goes to the end
    this.all.delete(k);
    this.all.set(k, e);
    const s = this.scopes.get(scope)!;
    s.delete(hash);
    s.set(hash, e);
    return e.value;
  }

  async put(p: AnswerPut): Promise<AnswerPutResult> {
    const k = `${p.scope}:${p.hash}`;
    const old = this.all.get(k);
    if (old && old.expiresAt > this.now()) return 'exists';
    if (old) this.drop(old);
    const size = p.value.byteLength + MEMORY_ENTRY_OVERHEAD;
    if (size > p.scopeMaxBytes || size > p.maxBytes) return 'full';
    const scoped = this.scopes.get(p.scope);
    while (scoped && scoped.size > 0 && (this.scopeBytes.get(p.scope) ?? 0) + size > p.scopeMaxBytes)
      this.drop(scoped.values().next().value!);
    while (this.all.size > 0 && this.total + size > p.maxBytes) this.drop(this.all.values().next().value!);
    const e: MemEntry = {
      scope: p.scope,
      kind: p.kind,
      hash: p.hash,
      value: Buffer.from(p.value),
      size,
      expiresAt: this.now() + p.ttlMs,
    };
    this.all.set(k, e);
    const s = this.scopes.get(p.scope) ?? new Map<string, MemEntry>();
    this.scopes.set(p.scope, s);
    s.set(p.hash, e);
    this.add(e, size);
    return 'stored';
  }

  async addVector(v: VectorPut): Promise<void> {
    const byScope = this.vecs.get(v.scope) ?? new Map();
    this.vecs.set(v.scope, byScope);
    const k = `${v.family}:${v.bucket}`;
    const bucket = byScope.get(k) ?? new Map();
    byScope.set(k, bucket);
    bucket.delete(v.hash);
    // its own 4-byte-aligned copy: read back as a float32 view without copying (cache/lsh.ts)
    const vec = Buffer.from(new Uint8Array(v.vec).buffer);
    bucket.set(v.hash, { vec, expiresAt: this.now() + v.ttlMs });
    while (bucket.size > v.maxPerBucket) bucket.delete(bucket.keys().next().value!);
  }

  async vectors(scope: string, family: string, buckets: number[], limit: number): Promise<StoredVector[]> {
    const byScope = this.vecs.get(scope);
    if (!byScope) return [];
    const now = this.now();
    const out: StoredVector[] = [];
    for (const b of buckets) {
      const bucket = byScope.get(`${family}:${b}`);
      if (!bucket) continue;
      let n = 0;
      for (const [hash, e] of bucket) {
        if (e.expiresAt <= now) bucket.delete(hash);
        else if (n++ < limit) out.push({ hash, vec: e.vec });
      }
    }
    return out;
  }

  async purge(scope: string): Promise<{ entries: number; bytes: number }> {
    this.vecs.delete(scope);
    const s = this.scopes.get(scope);
    if (!s) return { entries: 0, bytes: 0 };
    let bytes = 0;
    const entries = s.size;
    for (const e of [...s.values()]) {
      bytes += e.size;
      this.drop(e);
    }
    return { entries, bytes };
  }

  async bytesByKind(_kinds?: string[]): Promise<Record<string, number>> {
    return Object.fromEntries(this.kindBytes);
  }

  async close(): Promise<void> {}

  private add(e: MemEntry, n: number): void {
    this.total += n;
    this.scopeBytes.set(e.scope, (this.scopeBytes.get(e.scope) ?? 0) + n);
    this.kindBytes.set(e.kind, (this.kindBytes.get(e.kind) ?? 0) + n);
  }

  private drop(e: MemEntry): void {
    this.all.delete(`${e.scope}:${e.hash}`);
    const s = this.scopes.get(e.scope);
    s?.delete(e.hash);
    if (s && s.size === 0) {
      this.scopes.delete(e.scope);
      this.scopeBytes.delete(e.scope);
    }
    this.add(e, -e.size);
    if (!s || s.size === 0) this.scopeBytes.delete(e.scope);
  }
}
