/**
 * The Valkey store for `store.client` and `store.topology`: tollgate's own RESP connection (default on
 * a standalone server) or iovalkey (any topology; the only one for sentinel).
 */
import type { StoreConfig } from '../config/types.js';
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
    throw new Error('VALKEY_SENTINELS is set but store.topology is standalone: set store.topology: sentinel');
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
  return store.client === 'iovalkey' ? new IovalkeyStore(opts) : new ValkeyStore(opts);
}
