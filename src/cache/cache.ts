/**
 * The answer cache (docs/cache.md): what a call's key is (key.ts), looking an answer up for the
 * Check (bounded in time: a slow store is a miss), and filling it from the response phase with the
 * answer reassembled (reassemble.ts). Where answers live is the store's (store/answers.ts).
 */
import type { CacheConfig } from '../config/types.js';
import type { CacheRef } from '../policy/settle.js';
import type { AnswerStore } from '../store/answers.js';
import { bounded } from './bounded.js';
import { type CallKey, callKey, scopeOf } from './key.js';
import { reassemble } from './reassemble.js';
import type { SemanticIndex } from './semantic.js';

/** Last user turns longer than this are not embedded (the text rides in the reservation record). */
export const SEMANTIC_MAX_CHARS = 4096;

export interface CacheQuery {
  ref: CacheRef;
  key: CallKey;
  dialect: string;
  /** cache-control: no-cache — look nothing up (the answer may still be filled). */
  serve: boolean;
  /** cache-control: no-store — fill nothing. */
  fill: boolean;
}

export interface CacheHit {
  json: string;
  tier: 'exact' | 'semantic';
  similarity?: number;
}

export interface CacheCounters {
  lookup(tier: 'exact' | 'semantic', result: 'hit' | 'miss' | 'error'): void;
  fill(result: 'stored' | 'exists' | 'full' | 'skipped' | 'error'): void;
}

/** cache-control directives of a request (lower-case header map). */
function directives(headers: Record<string, string>): Set<string> {
  const v = headers['cache-control'];
  if (!v) return new Set();
  return new Set(
    v
      .toLowerCase()
      .split(',')
      .map((s) => s.trim().split('=')[0]),
  );
}

export class AnswerCache {
  constructor(
    readonly store: AnswerStore,
    private readonly counters?: CacheCounters,
    readonly semantic?: SemanticIndex,
  ) {}

  /** The call's place in the cache, or undefined when it is not cacheable. */
  query(
    cfg: CacheConfig,
    identity: Readonly<Record<string, string | undefined>>,
    dialect: string,
    model: string,
    body: string | Buffer | undefined,
    headers: Record<string, string>,
  ): CacheQuery | undefined {
    if (body === undefined) return undefined;
    const scope = scopeOf(cfg.scope, identity);
    if (!scope) return undefined;
    const key = callKey(dialect, model, body);
    if (!key) return undefined;
    const d = directives(headers);
    const ref: CacheRef = { s: scope.id, k: scope.kind, h: key.exact };
    if (cfg.semantic && key.lastUser && key.lastUser.length <= SEMANTIC_MAX_CHARS) {
      ref.f = key.family;
      ref.q = key.lastUser;
    }
    return { ref, key, dialect, serve: !d.has('no-cache'), fill: !d.has('no-store') };
  }

  /**
   * The answer for `q`, exact first (within `timeoutMs`), then semantic (embedding and search within
   * `semanticMs`: what is left of the decision's deadline); a miss when time runs out.
   */
  async lookup(
    cfg: CacheConfig,
    q: CacheQuery,
    timeoutMs: number,
    semanticMs = timeoutMs,
  ): Promise<CacheHit | undefined> {
    const started = performance.now();
    if (!q.serve) return undefined;
    const exact = await bounded(this.store.get(q.ref.s, q.ref.h), timeoutMs);
    if (exact === 'error' || exact === 'timeout') this.counters?.lookup('exact', 'error');
    else if (exact) {
      this.counters?.lookup('exact', 'hit');
      return { json: exact.toString('utf8'), tier: 'exact' };
    } else this.counters?.lookup('exact', 'miss');
    if (!this.semantic || !cfg.semantic || !q.ref.f || !q.ref.q) return undefined;
    const left = semanticMs - (performance.now() - started);
    const near = left > 2 ? await this.semantic.nearest(cfg, q.ref.s, q.ref.f, q.ref.q, left - 1) : undefined;
    if (!near) {
      this.counters?.lookup('semantic', 'miss');
      return undefined;
    }
    const v = await bounded(
      this.store.get(q.ref.s, near.hash),
      Math.max(1, semanticMs - (performance.now() - started)),
    );
    if (!v || v === 'error' || v === 'timeout') {
      this.counters?.lookup('semantic', 'miss');
      return undefined;
    }
    this.counters?.lookup('semantic', 'hit');
    return { json: v.toString('utf8'), tier: 'semantic', similarity: near.similarity };
  }

  /** Fill from a complete 2xx answer (the response phase). Never throws. */
  async fill(
    cfg: CacheConfig | undefined,
    ref: CacheRef,
    dialect: string,
    contentType: string | undefined,
    body: Buffer,
  ): Promise<void> {
    if (!cfg) return;
    try {
      const json = reassemble(dialect, contentType, body);
      if (json === undefined || Buffer.byteLength(json) > cfg.maxEntryBytes) {
        this.counters?.fill('skipped');
        return;
      }
      const value = Buffer.from(json);
      const r = await this.store.put({
        scope: ref.s,
        kind: ref.k,
        hash: ref.h,
        value,
        ttlMs: cfg.ttlMs,
        scopeMaxBytes: cfg.scopeMaxBytes,
        maxBytes: cfg.maxBytes,
      });
      this.counters?.fill(r);
      if (r === 'stored' && this.semantic && cfg.semantic && ref.f && ref.q)
        await this.semantic.add(cfg, ref.s, ref.f, ref.q, ref.h);
    } catch {
      this.counters?.fill('error');
    }
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

export { bounded };
