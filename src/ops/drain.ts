import type { Inflight } from './inflight.js';
import type { Logger } from './log.js';

export interface DrainSteps {
  log: Logger;
  inflight: Inflight;
  /** Run first, in order: report NOT_SERVING, end the health Watch streams, stop watching and probing. */
  announce: (() => void)[];
  /** Stop taking calls and let in-flight ones finish, cancelling them at the deadline (`onForce` first). */
  stopCalls: (graceMs: number, onForce: () => void) => Promise<void>;
  /** Closed last, in order (the HTTP ports, the token pool, the decider, the store). */
  closers: ({ close(): unknown } | undefined)[];
}

/** NOT_SERVING, stop accepting, let in-flight calls finish (up to graceMs), then close in order. */
export async function drain(p: DrainSteps, graceMs: number): Promise<void> {
  const { log, inflight } = p;
  const t0 = Date.now();
  inflight.closing = true;
  // 1. Tell health checkers (Envoy's, the kubelet's gRPC probe, /readyz) first, then end the Watch
  //    streams: an open stream would hold the gRPC shutdown open for the whole grace period.
  for (const step of p.announce) step();
  log.info({ inflight: inflight.count, grace_ms: graceMs }, 'draining: NOT_SERVING, refusing new checks');
  // 2. Stop taking calls (GOAWAY; new calls get UNAVAILABLE) and let in-flight ones finish.
  await p.stopCalls(graceMs, () =>
    log.warn({ inflight: inflight.count }, 'grace period over: cancelling the remaining calls'),
  );
  // HTTP-mode checks are counted in `inflight` too; wait for them within what is left of the grace.
  await inflight.settled(graceMs - (Date.now() - t0));
  // 3. Then the HTTP ports (/readyz said 503 and /metrics stayed scrapable during the drain).
  for (const c of p.closers) await c?.close();
  log.info({ ms: Date.now() - t0, inflight: inflight.count }, 'drained');
  log.flush?.();
}
