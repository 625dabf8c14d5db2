/**
 * `store.wait_replicas`: after a script that wrote (a debiting check, a settle, an adjust), `WAIT N t`
 * so the write is on N replicas before the answer goes out; a failover then cannot lose it. `t` is what
 * is left of half the store's per-call timeout (at least 1 ms: `WAIT N 0` would block for ever), so
 * the answer goes out before the call's own timeout would judge the store silent.
 *
 * Fewer replicas within `t` (or an error) never changes the answer: the write is on the primary; it is
 * counted (tollgate_store_wait_short_total) and the call answered. The server resolves a WAIT's timeout
 * on its cron (every 1000/hz ms: 100 ms at the default hz 10), so a WAIT no replica can satisfy holds
 * the connection longer than `t`: tollgate stops waiting for it at `t`, and once the server answers a
 * WAIT short, skips WAIT (counting each skipped write as short) for SKIP_MS, so a lost replica stalls
 * the connection once per SKIP_MS, not every check. docs/high-availability.md.
 */
import { Outcome } from './types.js';

/** After a short WAIT, writes are answered without one (and counted short) this long. */
export const SKIP_MS = 1000;

export class ReplicaWait {
  /** WAITs that returned fewer than N replicas, failed, or were skipped after one that did. */
  short = 0;
  private skipUntil = 0;

  constructor(
    readonly replicas: number,
    private readonly send: (args: (string | number)[]) => Promise<unknown>,
  ) {}

  get on(): boolean {
    return this.replicas > 0;
  }

  /** Wait for the replicas, bounded by what is left of `timeoutMs / 2` since `startedAt` (performance.now()). */
  async after(startedAt: number, timeoutMs: number): Promise<void> {
    const now = performance.now();
    if (now < this.skipUntil) {
      this.short++;
      return;
    }
    const left = Math.max(1, Math.floor(timeoutMs * 0.5 - (now - startedAt)));
    // Skip WAIT for a while only on the server's word (a reply short of N, or an error), which for a
    // lost replica arrives when its cron resolves the WAIT; never on our own timer alone.
    const reply = this.send(['WAIT', this.replicas, left]).then(Number, () => -1);
    void reply.then((n) => {
      if (!(n >= this.replicas)) this.skipUntil = performance.now() + SKIP_MS;
    });
    let timer: NodeJS.Timeout | undefined;
    // One setImmediate after the timer: a reply already in the socket (the loop was busy) wins.
    const late = new Promise<number>((resolve) => {
      timer = setTimeout(() => setImmediate(() => resolve(-1)), left + 1);
    });
    const acked = await Promise.race([reply, late]);
    clearTimeout(timer);
    if (!(acked >= this.replicas)) this.short++;
  }
}

/** Whether a check wrote: debited a candidate or queued an entry. */
export const checkWrote = (outcome: Outcome): boolean =>
  outcome === Outcome.Allowed || outcome === Outcome.Queued;
