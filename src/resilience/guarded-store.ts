/**
 * The store behind its protections: one object owns what stands between a decision and the store.
 *  - the in-flight gate (store.max_inflight, gate.ts): a slot per call, waited for under the overload
 *    budget; after a wait the caller's `recheck` is asked first (the deny cache), and may answer;
 *  - the breaker (breaker.ts): consecutive failures open it; a late reply proves the store alive;
 *  - the per-call timing callback (`onStoreCall`: seconds, ok) — not for calls the breaker refused or
 *    the budget shed, which are not store failures;
 *  - on_store_failure: local — a MemoryStore holding this replica's share of each limit
 *    (store.replicas), rebuilt when the share changes on reload.
 * The in-memory store is called directly: it is local, it neither fails slowly nor needs a breaker.
 */
import { BreakerOpenError, OverloadedError } from '../errors.js';
import { MemoryStore } from '../store/memory.js';
import type { CheckPlan, CheckResult, Store } from '../store/types.js';
import { Breaker, type BreakerState } from './breaker.js';
import { StoreGate } from './gate.js';

/** The store settings the guard reads (a config's `store` section satisfies it). */
export interface GuardSettings {
  breakerFailures: number;
  breakerOpenMs: number;
  /** store.max_inflight (read per call). */
  maxInflight: number;
  /** store.timeout (ms). */
  timeoutMs: number;
  /** The local fallback holds 1/replicas of each limit. */
  replicas: number;
  memoryMaxKeys: number;
  memoryMaxRecords: number;
}

export interface GuardHooks {
  onBreakerChange?: (to: BreakerState, from: BreakerState) => void;
  /** Called after each store call with its duration and whether it failed. */
  onStoreCall?: (seconds: number, ok: boolean) => void;
}

/** Per call: what the caller wants to know around the store call. */
export interface CallHooks {
  /** Asked after waiting for a slot: an answer that makes the call unnecessary (then not sent). */
  recheck?: () => CheckResult | undefined;
  /** The store's answer, with performance.now() of when the call was sent. */
  replied?: (result: CheckResult, sentAt: number) => void;
}

export class GuardedStore {
  readonly breaker: Breaker;
  /** Store calls in flight per process (store.max_inflight; see gate.ts). */
  readonly gate: StoreGate;
  private settings: GuardSettings;
  private localStore: MemoryStore;

  constructor(
    readonly store: Store,
    settings: GuardSettings,
    private readonly hooks: GuardHooks = {},
  ) {
    this.settings = settings;
    this.breaker = new Breaker(
      { failures: settings.breakerFailures, openMs: settings.breakerOpenMs },
      hooks.onBreakerChange,
      Date.now,
      (since) => (store.lastReplyAt ?? Number.NEGATIVE_INFINITY) >= since,
    );
    this.localStore = new MemoryStore(Date.now, settings.replicas, settings.memoryMaxKeys);
    this.gate = new StoreGate(
      () => this.settings.maxInflight,
      () => this.settings.timeoutMs,
      () => store.progressAt ?? Number.NEGATIVE_INFINITY,
    );
  }

  /** The store is shared by every replica (Valkey): its denials may be cached, its queue tier used. */
  get shared(): boolean {
    return this.store.kind === 'valkey';
  }

  /** The on_store_failure: local store (for its metrics). */
  get local(): MemoryStore {
    return this.localStore;
  }

  /** Apply reloaded settings: breaker, per-call timeout, local share and key bounds. */
  configure(settings: GuardSettings): void {
    this.breaker.configure({ failures: settings.breakerFailures, openMs: settings.breakerOpenMs });
    this.store.setTimeoutMs?.(settings.timeoutMs);
    if (settings.replicas !== this.settings.replicas) {
      void this.localStore.close();
      this.localStore = new MemoryStore(Date.now, settings.replicas, settings.memoryMaxKeys);
    }
    this.localStore.setMaxKeys(settings.memoryMaxKeys);
    if (this.store instanceof MemoryStore) {
      this.store.setMaxKeys(settings.memoryMaxKeys);
      this.store.setMaxRecords(settings.memoryMaxRecords);
    }
    this.settings = settings;
  }

  /**
   * The store call: a slot among store.max_inflight (waiting for one, `recheck` is asked when it
   * comes), then the breaker. Time bounds (docs/overload.md): the store's per-call timeout on its
   * silence (ValkeyStore: store.timeout, event-loop-aware) fails per on_store_failure; `budgetAt`
   * sheds a check the store is still working towards (OverloadedError). Rejects with either.
   */
  async check(plan: CheckPlan, budgetAt: number, call: CallHooks = {}): Promise<CheckResult> {
    const store = this.store;
    if (store.kind === 'memory') return store.check(plan);
    const wait = this.gate.acquire(budgetAt);
    if (wait) {
      await wait;
      const answered = call.recheck?.();
      if (answered) {
        this.gate.release();
        return answered;
      }
    }
    const t0 = performance.now();
    try {
      // Budget already spent (CPU backlog before the store call): never send what we cannot wait for.
      if (t0 >= budgetAt) throw new OverloadedError('queued');
      const r = await this.breaker.run(() => store.check(plan, budgetAt));
      this.hooks.onStoreCall?.((performance.now() - t0) / 1000, true);
      call.replied?.(r, t0);
      return r;
    } catch (e) {
      if (!(e instanceof BreakerOpenError || e instanceof OverloadedError))
        this.hooks.onStoreCall?.((performance.now() - t0) / 1000, false);
      throw e;
    } finally {
      this.gate.release();
    }
  }

  /** on_store_failure: local — the per-replica share; undefined when that store is full too. */
  checkLocal(plan: CheckPlan): CheckResult | undefined {
    try {
      return this.localStore.checkSync(plan);
    } catch {
      return undefined;
    }
  }

  /** Closes the local fallback store (the wrapped store belongs to its creator). */
  async close(): Promise<void> {
    await this.localStore.close();
  }
}
