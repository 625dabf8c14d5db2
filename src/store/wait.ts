/**
 * `store.wait_replicas`: after a script that wrote (a debiting check, a settle, an adjust), `WAIT N t`
 * so the write is on N replicas before the answer goes out; a failover then cannot lose it. `t` is what
 * is left of half the store's per-call timeout (at least 1 ms: `WAIT N 0` would block for ever), so
 * the WAIT returns before the call's own timeout would judge the store silent. Fewer
 * replicas within `t` (or an error) never changes the answer: the write is on the primary; it is counted
 * (tollgate_store_wait_short_total) and the call answered. docs/high-availability.md.
 */
import { Outcome } from './types.js';

export class ReplicaWait {
  /** WAITs that returned fewer than N replicas, or failed. */
  short = 0;

  constructor(
    readonly replicas: number,
    private readonly send: (args: (string | number)[]) => Promise<unknown>,
  ) {}

  get on(): boolean {
    return this.replicas > 0;
  }

  /** Wait for the replicas, bounded by what is left of `timeoutMs` since `startedAt` (performance.now()). */
  async after(startedAt: number, timeoutMs: number): Promise<void> {
    const left = Math.max(1, Math.floor(timeoutMs * 0.5 - (performance.now() - startedAt)));
    try {
      const acked = Number(await this.send(['WAIT', this.replicas, left]));
      if (!(acked >= this.replicas)) this.short++;
    } catch {
      this.short++;
    }
  }
}

/** Whether a check wrote: debited a candidate or queued an entry. */
export const checkWrote = (outcome: Outcome): boolean =>
  outcome === Outcome.Allowed || outcome === Outcome.Queued;
