/**
 * What the ops side does with each settlement (src/settle/settler.ts SettledEvent): one log line per
 * settlement at debug, per anomaly (expired, unmatched, failed) at info. Metrics hook in here too
 * (`extra`: e.g. Prometheus counters in src/ops/). Never the prompt, the body or a raw key: the
 * reservation id is shown by its time prefix and first characters only.
 */
import type { SettledEvent } from '../settle/settler.js';
import type { Logger } from './log.js';

export type SettleObserver = (e: SettledEvent) => void;

const ANOMALIES: ReadonlySet<string> = new Set(['expired', 'unmatched', 'failed']);

/** The id as logged: enough to correlate, not enough to settle with. */
export function shortReservationId(id: string): string {
  const dot = id.indexOf('.');
  return id.slice(0, dot >= 0 && dot <= 11 ? dot + 7 : 8);
}

export function settleObserver(log: Logger, extra?: SettleObserver): SettleObserver {
  return (e) => {
    try {
      extra?.(e);
    } catch (err) {
      log.warn({ err: String(err) }, 'settlement observer failed');
    }
    const anomaly = ANOMALIES.has(e.outcome);
    if (!anomaly && !log.isLevelEnabled('debug')) return;
    const t = e.settlement?.tokens;
    const line = {
      outcome: e.outcome,
      reservation: shortReservationId(e.id),
      model: e.model,
      prompt_tokens: t?.prompt,
      cached_tokens: t?.cachedPrompt,
      output_tokens: t?.output,
      reasoning_tokens: t?.reasoning,
      micros: e.settlement?.micros,
      refunded_tokens: e.refundedTokens,
    };
    if (anomaly) log.info(line, 'settlement');
    else log.debug(line, 'settlement');
  };
}
