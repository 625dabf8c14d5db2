import { setTimeout as delay } from 'node:timers/promises';
import client from 'prom-client';
import type { Decider } from '../decision/decide.js';
import { queueStreamKey } from '../store/keys.js';
import { MemoryStore } from '../store/memory.js';
import type { Store } from '../store/types.js';
import type { Inflight } from './inflight.js';
import { type Metrics, mirrorCounter } from './metrics.js';
import { registerMemoryStoreMetrics } from './metrics-memory.js';
import { OverloadMetrics } from './overload-metrics.js';

export interface MetricSources {
  decider: Decider;
  store: Store;
  inflight: Inflight;
  /** The gRPC Check streams' buffer budget (server.max_buffered_bytes). */
  buffered: { readonly used: number; readonly refused: number };
}

/**
 * The gauges read at scrape time: breaker, in-flight checks, forgiven and deferred calls, the store
 * gate and buffer budget (overload), deny-cache hits, the in-memory stores' sizes. Returns the overload counters.
 */
export function attachMetricSources(metrics: Metrics, src: MetricSources): OverloadMetrics {
  const { decider, store, inflight, buffered } = src;
  const overload = new OverloadMetrics(metrics.registry, {
    storeInflight: () => decider.gate.active,
    storeWaiting: () => decider.gate.queued,
    bufferedBytes: () => buffered.used,
    refusedStreams: () => buffered.refused,
  });
  metrics.breakerSource = () => decider.breaker.current;
  metrics.inflightSource = () => inflight.count;
  metrics.forgivenSource = () => decider.breaker.forgiven;
  metrics.deferredSource = () => decider.pacer.deferred;
  mirrorCounter(
    metrics.registry,
    'tollgate_deny_cache_hits_total',
    'Denies answered from the local deny cache (a Valkey "denied until T" reused without a round trip)',
    () => decider.denyCache.hits,
  );
  mirrorCounter(
    metrics.registry,
    'tollgate_store_wait_short_total',
    'store.wait_replicas: writes whose WAIT got fewer replicas than asked in time, failed, or was skipped in the second after such a one (the call was answered anyway)',
    () => store.waitShort ?? 0,
  );
  mirrorCounter(
    metrics.registry,
    'tollgate_store_slot_spanning_checks_total',
    'store.topology: cluster: checks whose limits live in several slots (reserved slot by slot: one script call per slot, then the record)',
    () => store.clusterStats?.spanning ?? 0,
  );
  mirrorCounter(
    metrics.registry,
    'tollgate_store_compensations_total',
    'store.topology: cluster: slot-by-slot checks refused by one slot after another had debited (that debit refunded before answering)',
    () => store.clusterStats?.compensated ?? 0,
  );
  registerQueueLength(metrics.registry, decider, store);
  registerMemoryStoreMetrics(metrics.registry, () => ({
    memory: store instanceof MemoryStore ? store : undefined,
    local: decider.config.store.onStoreFailure === 'local' ? decider.localStore : undefined,
  }));
  return overload;
}

/** Entries waiting in each configured queue's stream (XLEN at scrape time; Valkey only). */
function registerQueueLength(registry: client.Registry, decider: Decider, store: Store): void {
  new client.Gauge({
    name: 'tollgate_queue_length',
    help: 'Entries in each queue tier stream (queues.<name>), read from Valkey when scraped',
    labelNames: ['queue'],
    registers: [registry],
    async collect() {
      const cfg = decider.config;
      const names = [...cfg.queues.keys()];
      if (names.length === 0) return;
      if (!store.streamLengths) {
        // the in-memory store never queues (the queue tier needs Valkey): nothing waits
        for (const n of names) this.set({ queue: n }, 0);
        return;
      }
      try {
        const keys = names.map((n) => queueStreamKey(cfg.store.prefix, n, cfg.store.topology === 'cluster'));
        const lengths = await Promise.race([
          store.streamLengths(keys),
          delay(500, undefined, { ref: false }),
        ]);
        if (!lengths) return;
        this.reset();
        for (const [i, n] of names.entries()) this.set({ queue: n }, lengths[i]);
      } catch {
        // Valkey unreachable: the gauge keeps its last values (the store metrics say why)
      }
    },
  });
}
