/**
 * Checks being decided right now (gRPC + HTTP), and the drain: once `closing`, `begin` refuses new
 * checks; `settled` waits for the in-flight ones.
 */
export class Inflight {
  count = 0;
  closing = false;
  private drained: (() => void) | undefined;

  /** Count a check in; false when draining (answer it UNAVAILABLE / 503). Bound: pass it around. */
  readonly begin = (): boolean => {
    if (this.closing) return false;
    this.count++;
    return true;
  };

  readonly end = (): void => {
    this.count--;
    if (this.count === 0 && this.drained) this.drained();
  };

  /** Resolves when no check is in flight, or after `ms`. */
  settled(ms: number): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise<void>((r) => {
      this.drained = r;
      setTimeout(r, Math.max(0, ms)).unref();
    });
  }
}
