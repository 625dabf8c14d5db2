/**
 * The answer cache's metrics (src/cache/): lookups by tier and result, fills by result, bytes held
 * per scope kind (read from the cache's store when scraped). Labels are fixed sets, and scope kinds
 * come from the config (cache.scope).
 */
import client from 'prom-client';
import type { CacheCounters } from '../cache/cache.js';

export class CacheMetrics implements CacheCounters {
  readonly lookups: client.Counter<'tier' | 'result'>;
  readonly fills: client.Counter<'result'>;
  readonly bytes: client.Gauge<'scope_kind'>;
  /** Bytes per scope kind, read at scrape time (set by the app when a cache is on). */
  source?: () => Promise<Record<string, number>>;

  constructor(registry: client.Registry) {
    this.lookups = new client.Counter({
      name: 'tollgate_cache_lookups_total',
      help: 'Answer cache lookups by tier (exact, semantic) and result (hit, miss, error)',
      labelNames: ['tier', 'result'],
      registers: [registry],
    });
    this.fills = new client.Counter({
      name: 'tollgate_cache_fills_total',
      help: 'Answer cache fills by result (stored, exists, full, skipped, error)',
      labelNames: ['result'],
      registers: [registry],
    });
    // every series exported from 0 (dashboards and rate() see the cache from the first scrape)
    for (const tier of ['exact', 'semantic'])
      for (const result of ['hit', 'miss', 'error']) this.lookups.inc({ tier, result }, 0);
    for (const result of ['stored', 'exists', 'full', 'skipped', 'error']) this.fills.inc({ result }, 0);
    const self = this;
    this.bytes = new client.Gauge({
      name: 'tollgate_cache_bytes',
      help: 'Bytes the answer cache holds per scope kind (process-local in memory, shared on Valkey)',
      labelNames: ['scope_kind'],
      registers: [registry],
      async collect() {
        if (!self.source) return;
        try {
          const by = await self.source();
          this.reset();
          for (const [k, v] of Object.entries(by)) this.set({ scope_kind: k }, v);
        } catch {}
      },
    });
  }

  lookup(tier: 'exact' | 'semantic', result: 'hit' | 'miss' | 'error'): void {
    this.lookups.inc({ tier, result });
  }

  fill(result: 'stored' | 'exists' | 'full' | 'skipped' | 'error'): void {
    this.fills.inc({ result });
  }
}
