/**
 * Circuit breaker with a half-open state: `failures` consecutive failures open it for `openMs`; then
 * exactly one probe call is let through; its success closes the breaker, its failure re-opens it.
 *
 * A timed-out call (StoreTimeoutError with `late`) is judged when it finally settles: if the store
 * replied after all, or replied to any other call since this one started (`alive`), the store is up
 * but slow (a load spike, a CPU-starved host) and the failure is forgiven — opening the breaker would
 * fail every call open for `openMs` instead of only the calls that timed out. A stopped, paused or
 * unreachable store replies to nothing: its timeouts count once the client gives up on them (the
 * Valkey client's command timeout, ~1 s) and connection errors count at once, so the breaker opens
 * as before, a little later for a paused store. Every call is still answered within its own timeout.
 */
import { BreakerOpenError, OverloadedError } from '../errors.js';

export type BreakerState = 'closed' | 'open' | 'half-open';

export class Breaker {
  private state: BreakerState = 'closed';
  private failures = 0;
  private openUntil = 0;
  private probing = false;
  private generation = 0;

  constructor(
    private opts: { failures: number; openMs: number },
    private readonly onChange: (to: BreakerState, from: BreakerState) => void = () => {},
    private readonly clock: () => number = Date.now,
    /** Whether the store replied (to anything) at or after `since` (same clock). */
    private readonly alive: (since: number) => boolean = () => false,
  ) {}

  /** Failed calls that did not count because the store was replying meanwhile. */
  forgiven = 0;

  /** New thresholds (config reload); the current state is kept. */
  configure(opts: { failures: number; openMs: number }): void {
    this.opts = opts;
  }

  get current(): BreakerState {
    if (this.state === 'open' && this.clock() >= this.openUntil) return 'half-open';
    return this.state;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.state === 'open') {
      if (this.clock() < this.openUntil || this.probing) throw new BreakerOpenError();
      this.transition('half-open');
    }
    if (this.state === 'half-open') {
      if (this.probing) throw new BreakerOpenError();
      this.probing = true;
    }
    // Calls started before the last transition report late; their results must not close an open
    // breaker or end someone else's half-open probe.
    const gen = this.generation;
    const started = this.clock();
    try {
      const v = await fn();
      if (gen === this.generation) this.success();
      return v;
    } catch (err) {
      if (err instanceof OverloadedError) {
        // The store was answering (only our own backlog was long): neither a failure nor a success.
        if (gen === this.generation) this.probing = false;
        throw err;
      }
      if (gen === this.generation) {
        const late = (err as { late?: Promise<boolean> }).late;
        if (this.state !== 'closed') this.failure();
        else if (this.alive(started)) this.forgiven++;
        else if (late) {
          void late.then((replied) => {
            if (gen !== this.generation || this.state !== 'closed') return;
            if (replied || this.alive(started)) this.forgiven++;
            else this.failure();
          });
        } else this.failure();
      }
      throw err;
    }
  }

  private success(): void {
    this.failures = 0;
    this.probing = false;
    if (this.state !== 'closed') this.transition('closed');
  }

  private failure(): void {
    this.probing = false;
    this.failures++;
    if (this.state === 'half-open' || (this.state === 'closed' && this.failures >= this.opts.failures)) {
      this.openUntil = this.clock() + this.opts.openMs;
      this.transition('open');
    }
  }

  private transition(to: BreakerState): void {
    const from = this.state;
    if (from === to) return;
    this.state = to;
    this.generation++;
    this.onChange(to, from);
  }
}
