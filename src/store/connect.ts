/** The Valkey store for `store.client`: tollgate's own RESP connection (default) or iovalkey. */
import type { StoreClient } from '../config/types.js';
import { IovalkeyStore } from './iovalkey.js';
import type { Store } from './types.js';
import { ValkeyStore, type ValkeyStoreOptions } from './valkey.js';

export type ConnectableStore = Store & { connect(): Promise<void> };

export function createValkeyStore(client: StoreClient, opts: ValkeyStoreOptions): ConnectableStore {
  return client === 'iovalkey' ? new IovalkeyStore(opts) : new ValkeyStore(opts);
}
