import type { EventLoopUtilization } from 'node:perf_hooks';
import { OverloadedError, StoreTimeoutError } from '../errors.js';
import { loopBusySince, loopMark } from './loop-busy.js';

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
 * never failed open. A timer that fires late (by more than half of `ms`: this process or the whole
 * host was stalled, e.g. CPU-throttled) restarts the silence clock: the store gets `ms` of our
 * attention before it is judged silent.
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
    let due = 0;
    let mark: EventLoopUtilization | undefined;
    let sentAt = 0;
    const judge = () => {
      if (done) return;
      const now = performance.now();
      if (progress && now >= budgetAt) {
        // Past the budget: shed if the store sent anything since this call was sent (it is alive,
        // working through our queue); fail per policy if it sent nothing at all for `ms` since.
        if (progress() >= sentAt) return settle(new OverloadedError('sent'));
        if (now - sentAt >= ms) return settle(timeout());
        return arm(Math.max(1, sentAt + ms - now));
      }
      // Fired late (this process, or the whole host, was stalled), or our own loop was saturated
      // meanwhile (a burst starving the host's CPU): the store had no fair chance to answer, so its
      // silence counts from now.
      if (progress && (now - due > ms / 2 || (mark && loopBusySince(mark)))) {
        start = now;
        mark = loopMark();
      }
      const quietSince = progress ? Math.max(start, progress()) : start;
      if (now - quietSince >= ms) return settle(timeout());
      arm(Math.max(1, Math.min(quietSince + ms, budgetAt) - now));
    };
    const timeout = () => {
      const err = new StoreTimeoutError(ms);
      err.late = p.then(
        () => true,
        () => false,
      );
      return err;
    };
    const settle = (err: Error) => {
      done = true;
      reject(err);
    };
    const arm = (delay: number) => {
      due = performance.now() + delay;
      timer = setTimeout(() => setImmediate(judge), delay);
    };
    setImmediate(() => {
      if (done) return;
      start = performance.now();
      sentAt = start;
      if (progress) mark = loopMark();
      arm(ms);
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
