import { StoreTimeoutError } from '../errors.js';

/**
 * Reject after `ms` unless settled. The clock starts once the event loop has finished the work queued
 * ahead of this call (setImmediate), and the rejection waits one more setImmediate: a burst of checks
 * that keeps the loop busy must not be mistaken for a slow Valkey (timers run before the poll phase,
 * so a reply already in the socket would otherwise lose the race). The bound is on Valkey's answer,
 * not on our own CPU backlog.
 */
export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    setImmediate(() => {
      if (done) return;
      timer = setTimeout(
        () =>
          setImmediate(() => {
            if (done) return;
            done = true;
            const err = new StoreTimeoutError(ms);
            err.late = p.then(
              () => true,
              () => false,
            );
            reject(err);
          }),
        ms,
      );
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
