/** The answer cache for a config: on Valkey when the store is (shared), else in this process. */
import type { Config } from '../config/types.js';
import type { CacheMetrics } from '../ops/cache-metrics.js';
import type { CacheFill } from '../settle/session.js';
import { ValkeyAnswerStore } from '../store/answer-valkey.js';
import { MemoryAnswerStore } from '../store/answers.js';
import { AnswerCache } from './cache.js';

export function openCache(
  cfg: Config,
  valkey: { url: string; caFile?: string } | undefined,
  metrics: CacheMetrics,
): AnswerCache | undefined {
  if (!cfg.cache) return undefined;
  const store = valkey
    ? new ValkeyAnswerStore(
        { url: valkey.url, caFile: valkey.caFile, timeoutMs: cfg.store.timeoutMs },
        cfg.store.prefix,
      )
    : new MemoryAnswerStore();
  metrics.source = () => store.bytesByKind();
  return new AnswerCache(store, metrics);
}

/** The response phase's side of the cache (settle/session.ts CacheFill). */
export function cacheFill(cache: AnswerCache, config: () => Config): CacheFill {
  return {
    maxBytes: () => config().cache?.maxEntryBytes ?? 0,
    fill: (record, contentType, body) => {
      if (record.c) void cache.fill(config().cache, record.c, record.d, contentType, body);
    },
  };
}
