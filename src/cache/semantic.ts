/**
 * The semantic tier (docs/cache.md): the same model, system prompt, tools and earlier turns (the
 * call's "family", cache/key.ts), and a last user turn whose embedding is within `threshold` cosine
 * similarity of an answered one. Vectors live with the answers (store/answers.ts: in this process,
 * or in Valkey sorted sets per LSH bucket), found through lsh.ts's buckets and re-scored exactly.
 */
import type { CacheConfig } from '../config/types.js';
import type { AnswerStore } from '../store/answers.js';
import { bounded } from './bounded.js';
import type { Embedder } from './embedder.js';
import { bucketOf, dot, fromBytes, probes, toBytes } from './lsh.js';

export interface SemanticIndex {
  nearest(
    cfg: CacheConfig,
    scope: string,
    family: string,
    text: string,
    timeoutMs: number,
  ): Promise<{ hash: string; similarity: number } | undefined>;
  add(cfg: CacheConfig, scope: string, family: string, text: string, hash: string): Promise<void>;
}

/** Embeddings of fills are not on any request's path: they get the embedder's own timeout. */
export class LshIndex implements SemanticIndex {
  constructor(
    private readonly store: AnswerStore,
    private readonly embedder: Embedder,
  ) {}

  async nearest(cfg: CacheConfig, scope: string, family: string, text: string, timeoutMs: number) {
    const sem = cfg.semantic;
    if (!sem) return undefined;
    const until = performance.now() + timeoutMs;
    const q = await this.embedder.embed(sem, text, timeoutMs);
    if (!q) return undefined;
    const left = until - performance.now();
    if (left <= 1) return undefined;
    const found = await bounded(
      this.store.vectors(scope, family, probes(bucketOf(q)), sem.maxCandidates),
      left,
    );
    if (!Array.isArray(found)) return undefined;
    let best: { hash: string; similarity: number } | undefined;
    for (const c of found) {
      const s = dot(q, fromBytes(c.vec));
      if (s >= sem.threshold && (!best || s > best.similarity)) best = { hash: c.hash, similarity: s };
    }
    return best;
  }

  async add(cfg: CacheConfig, scope: string, family: string, text: string, hash: string): Promise<void> {
    const sem = cfg.semantic;
    if (!sem) return;
    const v = await this.embedder.embed(sem, text, sem.timeoutMs);
    if (!v) return;
    await this.store.addVector({
      scope,
      family,
      bucket: bucketOf(v),
      hash,
      vec: toBytes(v),
      ttlMs: cfg.ttlMs,
      maxPerBucket: sem.maxCandidates,
    });
  }
}
