/**
 * The Valkey store for `store.client` and `store.topology`: tollgate's own RESP connection (default on
 * a standalone server) or iovalkey (any topology; the only one for sentinel and cluster).
 */
import type { StoreConfig } from '../config/types.js';
import { ClusterStore } from './cluster.js';
import { IovalkeyStore } from './iovalkey.js';
import type { Store } from './types.js';
import { type SentinelTarget, ValkeyStore, type ValkeyStoreOptions } from './valkey.js';

export type ConnectableStore = Store & { connect(): Promise<void> };
export type { SentinelTarget };

/** Where the store is: VALKEY_URL, and VALKEY_SENTINELS / VALKEY_SENTINEL_NAME for topology sentinel. */
export interface StoreAddress {
  valkeyUrl?: string;
  valkeyCaFile?: string;
  valkeySentinel?: SentinelTarget;
}

/** Whether the environment names a Valkey at all (else the in-memory store). */
export const hasValkey = (a: StoreAddress): boolean => Boolean(a.valkeyUrl || a.valkeySentinel);

/** The store's connection options; an error when the topology and the environment disagree. */
export function storeOptions(
  store: Pick<StoreConfig, 'topology' | 'waitReplicas'>,
  a: StoreAddress,
  timeoutMs: number,
): ValkeyStoreOptions {
  if (store.topology === 'sentinel' && !a.valkeySentinel)
    throw new Error('store.topology: sentinel needs VALKEY_SENTINELS and VALKEY_SENTINEL_NAME');
  if (store.topology !== 'sentinel' && a.valkeySentinel)
    throw new Error(
      `VALKEY_SENTINELS is set but store.topology is ${store.topology}: set store.topology: sentinel`,
    );
  if (store.topology === 'cluster' && !a.valkeyUrl)
    throw new Error(
      'store.topology: cluster needs VALKEY_URL naming one or more seed nodes (valkey://h1:7000,h2:7000)',
    );
  if (store.topology !== 'cluster' && a.valkeyUrl?.includes(','))
    throw new Error('VALKEY_URL names several nodes: set store.topology: cluster (or name one server)');
  return {
    // with sentinels the URL gives only scheme, credentials and db
    url: a.valkeyUrl ?? 'valkey://sentinel-primary',
    timeoutMs,
    caFile: a.valkeyCaFile,
    sentinel: a.valkeySentinel,
    waitReplicas: store.waitReplicas,
  };
}

export function createValkeyStore(
  store: Pick<StoreConfig, 'client' | 'topology' | 'waitReplicas'>,
  a: StoreAddress,
  timeoutMs: number,
): ConnectableStore {
  const opts = storeOptions(store, a, timeoutMs);
  if (store.topology === 'cluster') return new ClusterStore(opts);
  return store.client === 'iovalkey' ? new IovalkeyStore(opts) : new ValkeyStore(opts);
}
