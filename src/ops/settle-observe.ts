/**
 * Metrics and the log line for one settlement (src/settle/settler.ts SettledEvent): pass the returned
 * function as the Settler's `onSettled`. One debug line per settlement; the anomalies (expired,
 * unmatched, failed: a reservation that stands when it should have been settled) at info. Never a
 * Valkey key, a prompt or the reservation id itself (it settles the call): a 12-hex tag of it.
 */
import { createHash } from 'node:crypto';
import type { Config } from '../config/types.js';
import type { SettledEvent, SettleOutcomeLabel } from '../settle/settler.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { TokenKind } from './settle-metrics.js';

const ANOMALIES: ReadonlySet<SettleOutcomeLabel> = new Set(['expired', 'unmatched', 'failed']);
/** Outcomes whose usage says how good the reservation was (not an upstream error, not kept as is). */
const MEASURED: ReadonlySet<SettleOutcomeLabel> = new Set(['settled', 'estimated']);

const tag = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 12);

/**
 * `current` (optional): the running config, for the model label; without it the config the metrics
 * last saw loaded (Metrics.configLoaded) bounds it. A model not in that config is "*".
 */
export function settleObserver(
  metrics: Metrics,
  log: Logger,
  current?: { readonly config: Config },
): (e: SettledEvent) => void {
  const m = metrics.settle;
  return (e) => {
    m.settlements.inc({ outcome: e.outcome });
    const s = e.settlement;
    const model = e.model === undefined ? undefined : metrics.settleModelLabel(e.model, current?.config);
    if (s && model !== undefined) {
      const t = s.tokens;
      const kinds: [TokenKind, number][] = [
        ['prompt', t.prompt],
        ['cached', t.cachedPrompt],
        ['cache_write', t.cacheWrite],
        ['output', t.output],
        ['reasoning', t.reasoning],
      ];
      for (const [kind, n] of kinds) if (n > 0) m.tokens.inc({ model, kind }, n);
      if (s.micros > 0) m.dollars.inc({ model }, s.micros / 1e6);
      const used = t.prompt + t.output;
      if (MEASURED.has(e.outcome) && used > 0) m.ratio.observe(s.reservedTokens / used);
    }
    const refunded = e.refundedTokens ?? 0;
    if (refunded > 0) m.refunded.inc(refunded);
    else if (refunded < 0) m.overrun.inc(-refunded);

    const anomaly = ANOMALIES.has(e.outcome);
    if (!anomaly && !log.isLevelEnabled('debug')) return;
    const line = {
      outcome: e.outcome,
      reservation: tag(e.id),
      model,
      prompt_tokens: s?.tokens.prompt,
      cached_tokens: s?.tokens.cachedPrompt || undefined,
      cache_write_tokens: s?.tokens.cacheWrite || undefined,
      output_tokens: s?.tokens.output,
      reasoning_tokens: s?.tokens.reasoning || undefined,
      reserved_tokens: s?.reservedTokens,
      micros: s?.micros,
      reserved_micros: s?.reservedMicros,
      refunded_tokens: e.refundedTokens,
    };
    if (anomaly) log.info(line, 'settlement');
    else log.debug(line, 'settlement');
  };
}
