/**
 * Metrics of the in-memory stores (the primary store without VALKEY_URL, and the per-replica store of
 * on_store_failure: local), read at scrape time. `store` is "memory" or "local".
 */
import client from 'prom-client';
import type { MemoryStore } from '../store/memory.js';
import { mirrorCounter } from './metrics.js';

export function registerMemoryStoreMetrics(
  registry: client.Registry,
  stores: () => Record<'memory' | 'local', MemoryStore | undefined>,
): void {
  const sum = (f: (s: MemoryStore) => number) => () =>
    Object.values(stores()).reduce((n, s) => n + (s ? f(s) : 0), 0);
  new client.Gauge({
    name: 'tollgate_memory_store_keys',
    help: 'Limit keys held by the in-memory store (bounded by store.memory_max_keys)',
    labelNames: ['store'] as const,
    registers: [registry],
    collect() {
      for (const [name, s] of Object.entries(stores())) if (s) this.labels(name).set(s.size);
    },
  });
  mirrorCounter(
    registry,
    'tollgate_memory_store_evictions_total',
    'Keys dropped by the in-memory store at store.memory_max_keys; only keys whose bucket was full again or whose window had ended (no spend is forgotten)',
    sum((s) => s.evictions),
  );
  mirrorCounter(
    registry,
    'tollgate_memory_store_full_total',
    'Calls that needed a new key while the in-memory store was at store.memory_max_keys with nothing evictable: answered per on_store_failure (x-tollgate-degraded: store-full)',
    sum((s) => s.refusals),
  );
}
