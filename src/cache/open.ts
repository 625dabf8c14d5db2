/** The answer cache for a config: on Valkey when the store is (shared), else in this process. */
import type { Config } from '../config/types.js';
import type { CacheFill } from '../settle/session.js';
import { ValkeyAnswerStore } from '../store/answer-valkey.js';
import { MemoryAnswerStore } from '../store/answers.js';
import { AnswerCache, type CacheCounters } from './cache.js';
import { Embedder } from './embedder.js';
import { LshIndex } from './semantic.js';

export function openCache(
  cfg: Config,
  valkey: { url: string; caFile?: string; cluster?: boolean } | undefined,
  metrics: CacheCounters & { source?: () => Promise<Record<string, number>> },
): AnswerCache | undefined {
  if (!cfg.cache) return undefined;
  const store = valkey
    ? new ValkeyAnswerStore(
        { url: valkey.url, caFile: valkey.caFile, timeoutMs: cfg.store.timeoutMs },
        cfg.store.prefix,
        valkey.cluster,
      )
    : new MemoryAnswerStore();
  const kind = cfg.cache.scope.length === 0 ? 'global' : [...cfg.cache.scope].sort().join('+');
  metrics.source = () => store.bytesByKind([kind]);
  const semantic = cfg.cache.semantic ? new LshIndex(store, new Embedder()) : undefined;
  return new AnswerCache(store, metrics, semantic);
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
