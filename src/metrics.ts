/**
 * Prometheus metrics (prom-client). Labels are bounded by the config: outcome, reason, limit name,
 * configured model name ("*" for any other). Never tenant ids.
 */
import client from 'prom-client';
import type { Config } from './config/types.js';
import type { Decision } from './decision/types.js';
import type { BreakerState } from './resilience/breaker.js';

export class Metrics {
  readonly registry = new client.Registry();
  readonly decisions = new client.Counter({
    name: 'tollgate_decisions_total',
    help: 'Decisions by outcome (allow, deny), reason, limit and model',
    labelNames: ['outcome', 'reason', 'limit', 'model'] as const,
    registers: [this.registry],
  });
  readonly tokens = new client.Counter({
    name: 'tollgate_tokens_total',
    help: 'Tokens counted (prompt) and reserved (output) for admitted calls, by model',
    labelNames: ['model', 'type'] as const,
    registers: [this.registry],
  });
  readonly dollars = new client.Counter({
    name: 'tollgate_reserved_dollars_total',
    help: 'US dollars reserved by admitted calls (prompt + reserved output at configured prices), by model',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  readonly latency = new client.Histogram({
    name: 'tollgate_decision_duration_seconds',
    help: 'Time to decide one check, from request to answer',
    labelNames: ['outcome'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [this.registry],
  });
  readonly storeLatency = new client.Histogram({
    name: 'tollgate_store_duration_seconds',
    help: 'Duration of store (Valkey) calls',
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [this.registry],
  });
  readonly storeErrors = new client.Counter({
    name: 'tollgate_store_errors_total',
    help: 'Store calls that failed or timed out',
    registers: [this.registry],
  });
  readonly breaker = new client.Gauge({
    name: 'tollgate_breaker_state',
    help: 'Circuit breaker state: 0 closed, 1 half-open, 2 open',
    registers: [this.registry],
  });
  readonly reloads = new client.Counter({
    name: 'tollgate_config_reloads_total',
    help: 'Configuration reloads by result (success, failure)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
    this.breaker.set(0);
  }

  modelLabel(cfg: Config, model: string | undefined): string {
    if (!model) return '';
    return cfg.models.has(model) ? model : '*';
  }

  observe(cfg: Config, d: Decision, seconds: number): void {
    const s = d.stats;
    const model = this.modelLabel(cfg, s.chosenModel ?? s.model);
    this.decisions.inc({ outcome: d.kind, reason: d.reason, limit: s.limit ?? '', model });
    this.latency.observe({ outcome: d.kind }, seconds);
    if (d.kind === 'allow' && s.promptTokens !== undefined) {
      this.tokens.inc({ model, type: 'prompt' }, s.promptTokens);
      this.tokens.inc({ model, type: 'reserved' }, s.reservedTokens ?? 0);
      if (s.micros) this.dollars.inc({ model }, s.micros / 1e6);
    }
  }

  setBreaker(state: BreakerState): void {
    this.breaker.set(state === 'closed' ? 0 : state === 'half-open' ? 1 : 2);
  }

  storeCall(seconds: number, ok: boolean): void {
    this.storeLatency.observe(seconds);
    if (!ok) this.storeErrors.inc();
  }
}
