import { OverloadedError, StoreTimeoutError } from '../errors.js';

/**
 * Reject after `ms` unless settled. The clock starts once the event loop has finished the work queued
 * ahead of this call (setImmediate), and the rejection waits one more setImmediate: a burst of checks
 * that keeps the loop busy must not be mistaken for a slow Valkey (timers run before the poll phase,
 * so a reply already in the socket would otherwise lose the race). The bound is on Valkey's answer,
 * not on our own CPU backlog.
 *
 * With `progress` (performance.now() of the latest bytes the store sent on this call's connection),
 * the bound is on the store's *silence*, not on the call's age: the call times out (StoreTimeoutError,
 * the store is unreachable or silent) only when neither it nor any other call on the connection got a
 * reply for `ms`. While replies keep arriving the store is working through our own queue of calls,
 * every one of which it will run whether we wait or not: the call keeps waiting, up to `budgetAt`
 * (performance.now() time), then gives up with OverloadedError('sent') — answered as overloaded,
 * never failed open.
 */
export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  progress?: () => number,
  budgetAt = Number.POSITIVE_INFINITY,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let start = 0;
    const judge = () => {
      if (done) return;
      const now = performance.now();
      const quietSince = progress ? Math.max(start, progress()) : start;
      if (now - quietSince >= ms) {
        done = true;
        const err = new StoreTimeoutError(ms);
        err.late = p.then(
          () => true,
          () => false,
        );
        reject(err);
      } else if (now >= budgetAt) {
        done = true;
        reject(new OverloadedError('sent'));
      } else {
        timer = setTimeout(arm, Math.max(1, Math.min(quietSince + ms, budgetAt) - now));
      }
    };
    const arm = () => setImmediate(judge);
    setImmediate(() => {
      if (done) return;
      start = performance.now();
      timer = setTimeout(arm, ms);
    });
    p.then(
      (v) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
