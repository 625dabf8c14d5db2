/**
 * Pacing of decisions across event-loop turns (server.checks_per_turn).
 *
 * Checks arrive in bursts: one socket read carries dozens of HTTP/2 streams, and grpc-js hands them
 * all to the handler in the same turn of the event loop. Node writes the answers out after that turn,
 * so deciding the whole burst at once holds the first answer until the last check is decided (24
 * checks × ~0.35 ms ≈ 8 ms in the bench's closed loop), and the client — Envoy, usually sharing the
 * pod's CPU — sits idle meanwhile, then gets every answer at once.
 *
 * The pacer lets at most `perTurn` decisions start per turn. Later ones wait, first come first
 * served, for the next turns: the answers decided so far are written out between them, and the client
 * works on those while the rest are decided. No check is dropped or reordered, and each waits at most
 * ceil(queued / perTurn) turns. When fewer than `perTurn` checks arrive per turn (light load), nothing
 * waits: the cost is one setImmediate per turn that starts a decision (it resets the count).
 */
export class TurnPacer {
  /** Decisions started in the current turn. */
  private used = 0;
  private perTurn = 0;
  private waiting: ((() => void) | undefined)[] = [];
  private head = 0;
  private tickScheduled = false;
  /** Checks that waited for a later turn (tollgate_checks_deferred_total). */
  deferred = 0;

  /**
   * Call before starting a decision. undefined: start now. Otherwise a promise that resolves on a
   * later turn, in arrival order. perTurn ≤ 0 turns pacing off.
   */
  enter(perTurn: number): Promise<void> | undefined {
    if (perTurn <= 0) return undefined;
    this.perTurn = perTurn;
    this.schedule();
    if (this.head === this.waiting.length && this.used < perTurn) {
      this.used++;
      return undefined;
    }
    this.deferred++;
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** Checks waiting for a later turn right now. */
  get queued(): number {
    return this.waiting.length - this.head;
  }

  private schedule(): void {
    if (this.tickScheduled) return;
    this.tickScheduled = true;
    // setImmediate runs after this turn's I/O callbacks, and one scheduled from inside it runs in the
    // next turn: the answers of the decisions started now are written out in between.
    setImmediate(this.tick);
  }

  private readonly tick = (): void => {
    this.tickScheduled = false;
    const n = Math.min(this.perTurn, this.waiting.length - this.head);
    this.used = n;
    for (let i = 0; i < n; i++) {
      const resolve = this.waiting[this.head];
      this.waiting[this.head++] = undefined;
      resolve?.(); // the decision goes on right after this callback (microtask)
    }
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head >= 1024) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
    // Started some: the next turn starts with them counted, so come back to reset the count.
    if (n > 0) this.schedule();
  };
}
