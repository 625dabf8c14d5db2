import type { Config } from '../config/types.js';
import type { Decision } from '../decision/types.js';
import type { Logger } from './log.js';
import { type Metrics, outcomeOf } from './metrics.js';

export type Observe = (d: Decision, seconds: number, requestId: string | undefined) => void;

/**
 * Metrics and the decision log line for one answered check. One info line per call that did not
 * simply pass: denied, rerouted, degraded, queued, shadow-denied. Plain allows only at debug (and the
 * line is not even built unless debug is on: hot path). Never the body, prompt text, headers or the
 * raw tenant id.
 */
export function decisionObserver(
  metrics: Metrics,
  log: Logger,
  current: { readonly config: Config },
): Observe {
  return (d, seconds, requestId) => {
    metrics.observe(current.config, d, seconds);
    const s = d.stats;
    const important = outcomeOf(d) !== 'allow' || d.reason === 'shadow';
    if (!important && !log.isLevelEnabled('debug')) return;
    const line = {
      request_id: requestId,
      decision: d.kind,
      reason: d.reason,
      status: d.kind === 'deny' ? d.httpStatus : 200,
      tenant: s.tenantTag,
      model: s.model,
      chosen_model: s.chosenModel,
      prompt_tokens: s.promptTokens,
      reserved_tokens: s.reservedTokens,
      micros: s.micros,
      limit: s.limit,
      ms: Math.round(seconds * 1e6) / 1000,
    };
    if (important) log.info(line, 'decision');
    else log.debug(line, 'decision');
  };
}
