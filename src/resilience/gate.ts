/**
 * A bound on store calls in flight per process (store.max_inflight), first come first served.
 *
 * Every call written to Valkey will be run by Valkey, whether or not we still wait for it; so calls are
 * not written faster than they come back. Past the bound a check waits here, unsent, and when a slot
 * frees the caller looks at the deny cache again first (a burst for one tenant is then answered from
 * the cache once the first denials are in, without reaching Valkey). A waiting check leaves:
 *  - with a slot (acquire resolves; call release() when the store call settles);
 *  - with OverloadedError('queued') when its overload budget (`budgetAt`) runs out: nothing was sent,
 *    nothing debited; answered as overloaded (retryable), never failed open;
 *  - with StoreTimeoutError when calls are in flight and the store has sent nothing for `silentMs`
 *    (store.timeout) since the check arrived: the store is silent, not busy, and the failure policy
 *    decides — the same rule the calls in flight are judged by (resilience/timeout.ts).
 * Costs nothing while below the bound: a counter.
 */
import type { EventLoopUtilization } from 'node:perf_hooks';
import { OverloadedError, StoreTimeoutError } from '../errors.js';
import { loopBusySince, loopMark } from './loop-busy.js';

interface Waiter {
  arrivedAt: number;
  budgetAt: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class StoreGate {
  private inflight = 0;
  private waiting: Waiter[] = [];
  private head = 0;
  private timer?: NodeJS.Timeout;
  private due = 0;
  private mark?: EventLoopUtilization;
  /** When the judge last ran late (a stalled process or host): silence counts from then. */
  private resumedAt = Number.NEGATIVE_INFINITY;
  /** Checks shed here (never sent). */
  shed = 0;

  constructor(
    /** store.max_inflight (read per call: reloadable). */
    private readonly max: () => number,
    /** store.timeout (ms). */
    private readonly silentMs: () => number,
    /** performance.now() of the store's latest bytes (Store.progressAt). */
    private readonly progress: () => number,
  ) {}

  /** Store calls in flight now. */
  get active(): number {
    return this.inflight;
  }

  /** Checks waiting for a slot now. */
  get queued(): number {
    return this.waiting.length - this.head;
  }

  /** undefined: the slot is taken, go. Otherwise wait for the promise (see the file comment). */
  acquire(budgetAt: number): Promise<void> | undefined {
    if (this.inflight < this.max() && this.queued === 0) {
      this.inflight++;
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ arrivedAt: performance.now(), budgetAt, resolve, reject });
      this.arm(1);
    });
  }

  release(): void {
    this.inflight--;
    const max = this.max();
    while (this.inflight < max && this.queued > 0) {
      this.inflight++;
      this.take().resolve();
    }
  }

  private take(): Waiter {
    const w = this.waiting[this.head];
    this.waiting[this.head++] = undefined as unknown as Waiter;
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head >= 1024) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    return w;
  }

  private arm(ms: number): void {
    if (this.timer) return;
    this.due = performance.now() + ms;
    this.mark = loopMark();
    this.timer = setTimeout(() => setImmediate(this.judge), ms); // replies already read first
  }

  /** Shed waiters whose budget ran out; fail those that have waited on a silent store. */
  private readonly judge = (): void => {
    this.timer = undefined;
    const now = performance.now();
    const silentMs = this.silentMs();
    if (now - this.due > silentMs / 2 || (this.mark && loopBusySince(this.mark))) this.resumedAt = now; // see resilience/timeout.ts
    const progress = this.progress();
    const quietSince = Math.max(progress, this.resumedAt);
    let next = Number.POSITIVE_INFINITY;
    const keep: Waiter[] = [];
    for (let i = this.head; i < this.waiting.length; i++) {
      const w = this.waiting[i];
      // past its budget a waiter is judged on the store's true silence (as in resilience/timeout.ts)
      const quiet = now - Math.max(w.arrivedAt, now >= w.budgetAt ? progress : quietSince);
      if (this.inflight > 0 && quiet >= silentMs) w.reject(new StoreTimeoutError(silentMs));
      else if (now >= w.budgetAt) {
        this.shed++;
        w.reject(new OverloadedError('queued'));
      } else {
        keep.push(w);
        next = Math.min(next, w.budgetAt - now, silentMs - quiet);
      }
    }
    this.waiting = keep;
    this.head = 0;
    if (keep.length > 0) this.arm(Math.max(1, Math.ceil(next)));
  };
}
