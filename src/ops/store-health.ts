/**
 * The store at start-up (Valkey when configured, else the in-memory store) and its last known
 * reachability: start-up connect, breaker transitions, and a ping every second while it is down
 * (health only: answers go through the breaker).
 */
import type { Config } from '../config/types.js';
import { createValkeyStore, hasValkey, type SentinelTarget } from '../store/connect.js';
import { MemoryStore } from '../store/memory.js';
import type { Store } from '../store/types.js';
import type { Logger } from './log.js';

/** How often an unusable store is pinged to find out when it is back (health only). */
const STORE_PROBE_MS = 1000;

export interface StoreSource {
  /** Use this store instead of building one from valkeyUrl. */
  store?: Store;
  valkeyUrl?: string;
  valkeyCaFile?: string;
  /** store.topology: sentinel (VALKEY_SENTINELS, VALKEY_SENTINEL_NAME, VALKEY_SENTINEL_PASSWORD). */
  valkeySentinel?: SentinelTarget;
}

/** The store to serve with, and whether it answered at start (a Valkey that does not is retried). */
export async function openStore(
  src: StoreSource,
  cfg: Config,
  log: Logger,
): Promise<{ store: Store; up: boolean }> {
  if (src.store) return { store: src.store, up: true };
  if (!hasValkey(src)) {
    if (cfg.store.topology === 'sentinel')
      throw new Error('store.topology: sentinel needs VALKEY_SENTINELS and VALKEY_SENTINEL_NAME');
    log.warn('no VALKEY_URL: using the in-memory store (single replica only: limits are per process)');
    const store = new MemoryStore(Date.now, 1, cfg.store.memoryMaxKeys);
    store.setMaxRecords(cfg.store.memoryMaxRecords);
    return { store, up: true };
  }
  const vs = createValkeyStore(cfg.store, src, cfg.store.timeoutMs);
  try {
    await vs.connect();
    log.info(
      { store: 'valkey', client: cfg.store.client, topology: cfg.store.topology },
      'connected to Valkey; check script loaded',
    );
    return { store: vs, up: true };
  } catch (err) {
    log.warn(
      { err: (err as Error).message, policy: cfg.store.onStoreFailure },
      'Valkey not reachable at start; serving per on_store_failure until it is',
    );
    return { store: vs, up: false };
  }
}

/** Last known store reachability; while a Valkey store is down it is pinged until it answers. */
export class StoreHealth {
  up = true;
  /** Called on every change (set once serving has started). */
  onChange: () => void = () => {};
  private probe: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    up: boolean,
  ) {
    if (!up) this.set(false);
  }

  set(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    this.onChange();
    if (!up && !this.probe && this.store.kind === 'valkey') {
      this.probe = setInterval(() => {
        this.store.ping().then(
          () => this.set(true),
          () => {},
        );
      }, STORE_PROBE_MS);
      this.probe.unref();
    } else if (up && this.probe) {
      clearInterval(this.probe);
      this.probe = undefined;
    }
  }

  stop(): void {
    if (this.probe) clearInterval(this.probe);
  }
}
