/**
 * The response phase's metrics (src/settle/settler.ts): settlements by outcome, what calls really
 * used (tokens by kind, dollars) by model, tokens refunded and overrun, and how far reservations are
 * from usage. Registered with the other metrics (ops/metrics.ts), so they are exported from the start.
 * Labels are bounded: outcome and kind are fixed sets, model a configured model name or "*".
 */
import client from 'prom-client';

export const SETTLE_OUTCOMES = [
  'settled',
  'estimated',
  'upstream_error',
  'kept',
  'duplicate',
  'expired',
  'unmatched',
  'failed',
] as const;

export const TOKEN_KINDS = ['prompt', 'cached', 'cache_write', 'output', 'reasoning'] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

export class SettleMetrics {
  readonly settlements: client.Counter<'outcome'>;
  readonly tokens: client.Counter<'model' | 'kind'>;
  readonly dollars: client.Counter<'model'>;
  readonly refunded: client.Counter;
  readonly overrun: client.Counter;
  readonly ratio: client.Histogram;

  constructor(registry: client.Registry) {
    const registers = [registry];
    this.settlements = new client.Counter({
      name: 'tollgate_settlements_total',
      help: 'Reservations settled after the response, by outcome (settled, estimated, upstream_error, kept, duplicate, expired, unmatched, failed)',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.tokens = new client.Counter({
      name: 'tollgate_actual_tokens_total',
      help: 'Tokens settled calls were charged, by model and kind (prompt includes cached and cache_write; output includes reasoning)',
      labelNames: ['model', 'kind'] as const,
      registers,
    });
    this.dollars = new client.Counter({
      name: 'tollgate_actual_dollars_total',
      help: 'US dollars settled calls were charged (each kind of token at its own price), by model',
      labelNames: ['model'] as const,
      registers,
    });
    this.refunded = new client.Counter({
      name: 'tollgate_refunded_tokens_total',
      help: 'Tokens given back to the limits by settlement (reserved but not used)',
      registers,
    });
    this.overrun = new client.Counter({
      name: 'tollgate_overrun_tokens_total',
      help: 'Tokens charged by settlement beyond the reservation (usage above what was reserved)',
      registers,
    });
    this.ratio = new client.Histogram({
      name: 'tollgate_reserved_to_actual_ratio',
      help: 'Reserved tokens (prompt + output budget) divided by the tokens the call used, per settled or estimated call',
      buckets: [1, 1.5, 2, 3, 5, 10, 20, 50],
      registers,
    });
    for (const outcome of SETTLE_OUTCOMES) this.settlements.inc({ outcome }, 0);
    this.refunded.inc(0);
    this.overrun.inc(0);
  }
}
