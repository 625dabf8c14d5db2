import type { Config } from '../config/types.js';
import type { BreakerState } from '../resilience/breaker.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { StoreHealth } from './store-health.js';

export interface DeciderEventSinks {
  metrics: Metrics;
  log: Logger;
  storeHealth: StoreHealth;
  /** The running config (read when an event happens). */
  config: () => Config;
  /** Counts checks shed by the overload budget (read when an event happens). */
  shed: (stage: 'queued' | 'sent') => void;
}

/**
 * What the Decider reports, turned into metrics, store health and log lines: a breaker that opens
 * marks the store unusable (health, and a probe until it answers), one that closes marks it usable.
 */
export function deciderEvents(s: DeciderEventSinks) {
  const { metrics, log, storeHealth } = s;
  return {
    onBreakerChange: (to: BreakerState, from: BreakerState) => {
      metrics.setBreaker(to);
      if (to === 'open') storeHealth.set(false);
      else if (to === 'closed') storeHealth.set(true);
      const level = to === 'open' ? 'error' : 'warn';
      log[level](
        { breaker: to, from, policy: s.config().store.onStoreFailure },
        `store circuit breaker ${to}`,
      );
    },
    onStoreCall: (seconds: number, ok: boolean) => metrics.storeCall(seconds, ok),
    onOverloaded: (stage: 'queued' | 'sent') => s.shed(stage),
  };
}
