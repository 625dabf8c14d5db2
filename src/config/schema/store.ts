/**
 * `store`: the Valkey key prefix, timeouts, the breaker, what to do when Valkey fails, the client,
 * the in-memory store's bound.
 */
import type { z } from 'zod';
import { DEFAULT_MAX_INFLIGHT } from '../overload.js';
import { bool, duration, int, mapping, oneOf, str } from './fields.js';

/**
 * Limit keys the in-memory store holds at once (store.memory_max_keys): ~200 bytes each, so ~20 MB.
 * At the bound, keys whose state equals no state (bucket full again, window over) are evicted; if
 * none is, a call that needs a new key is answered per on_store_failure (src/store/memory.ts).
 */
export const DEFAULT_MEMORY_MAX_KEYS = 100_000;

/**
 * Reservation records the in-memory store holds at once (store.memory_max_records): ~0.5 KB each (one
 * string: src/store/memory-record.ts), so ~10 MB. A record lives until its call is settled (or settle.reservation_ttl): without ext_proc,
 * records are never settled and this bound is reached. Past it the oldest is dropped: its reservation
 * stands as charged (never an under-charge) and its concurrency slots free at their lease end.
 */
export const DEFAULT_MEMORY_MAX_RECORDS = 20_000;

export const storeSchema = mapping({
  prefix: str('a short prefix of letters, digits, _ or -', /^[A-Za-z0-9_-]{1,32}$/).default('tollgate'),
  /** Per Valkey call; must be below server.decision_deadline. */
  timeout: duration('25ms').prefault('25ms'),
  breaker: mapping({
    failures: int(1, 1000).default(3),
    open_for: duration('30s').prefault('30s'),
  }).prefault({}),
  on_store_failure: oneOf(['allow', 'deny', 'local']).default('allow'),
  replicas: int(1, 10_000).default(1),
  deny_cache: bool().default(true),
  /** Unset: iovalkey with topology sentinel or cluster, else resp. */
  client: oneOf(['resp', 'iovalkey']).optional(),
  topology: oneOf(['standalone', 'sentinel', 'cluster']).default('standalone'),
  /** Cluster: the identity dimension whose value hash-tags a caller's keys (docs/high-availability.md). */
  shard_by: str('an identity dimension name (e.g. org or tenant)', /^[A-Za-z0-9_-]{1,64}$/).optional(),
  wait_replicas: int(0, 16).default(0),
  memory_max_keys: int(100, 100_000_000).default(DEFAULT_MEMORY_MAX_KEYS),
  memory_max_records: int(100, 100_000_000).default(DEFAULT_MEMORY_MAX_RECORDS),
  max_inflight: int(1, 100_000).default(DEFAULT_MAX_INFLIGHT),
})
  .refine((s) => !(s.topology === 'cluster' && s.client === 'resp'), {
    error:
      'store.client: resp does not speak Valkey Cluster; with store.topology: cluster use client: iovalkey (or leave client unset)',
    path: ['client'],
  })
  .refine((s) => !(s.topology === 'cluster' && s.wait_replicas > 0), {
    error:
      'store.wait_replicas is not supported with store.topology: cluster (a WAIT must follow each script on its own node)',
    path: ['wait_replicas'],
  })
  .refine((s) => !(s.topology === 'sentinel' && s.client === 'resp'), {
    error:
      'store.client: resp cannot follow a Sentinel failover; with store.topology: sentinel use client: iovalkey (or leave client unset)',
    path: ['client'],
  })
  .transform((s) => ({
    prefix: s.prefix,
    timeoutMs: s.timeout,
    breakerFailures: s.breaker.failures,
    breakerOpenMs: s.breaker.open_for,
    onStoreFailure: s.on_store_failure,
    /** Replica count used by on_store_failure: local (each pod enforces limit / replicas). */
    replicas: s.replicas,
    /** Answer repeat denies from a local "denied until T" cache (T from the script). */
    denyCache: s.deny_cache,
    /** Valkey client: tollgate's own RESP connection (default) or iovalkey. Restart to change. */
    client: s.client ?? (s.topology === 'standalone' ? 'resp' : 'iovalkey'),
    /** standalone: VALKEY_URL is the primary; sentinel: VALKEY_SENTINELS find it (docs/high-availability.md). */
    topology: s.topology,
    /**
     * The dimension whose value becomes a `{hash tag}` in every key of a limit keyed by it (and the
     * reservation record of a call whose first limit is such), so one caller's budgets share a cluster
     * slot and one script decides them. Unset: no tags; each limit key hashes on its own.
     */
    shardBy: s.shard_by,
    /** WAIT for this many replicas after each debiting check and settle (0 = off). Restart to change. */
    waitReplicas: s.wait_replicas,
    /** In-memory store (and on_store_failure: local): most limit keys held at once (store.memory_max_keys). */
    memoryMaxKeys: s.memory_max_keys,
    /** In-memory store: reservation records held at once (store.memory_max_records). */
    memoryMaxRecords: s.memory_max_records,
    /** Store calls in flight per process; more wait unsent (docs/overload.md). */
    maxInflight: s.max_inflight,
  }));

export type StoreConfig = z.output<typeof storeSchema>;
export type FailurePolicy = StoreConfig['onStoreFailure'];
export type StoreClient = StoreConfig['client'];
export type StoreTopology = StoreConfig['topology'];
