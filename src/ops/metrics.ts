/**
 * Prometheus metrics (prom-client), served on the HTTP port at /metrics.
 *
 * Every label value is bounded by the config or by code: outcome and reason (fixed sets), limit
 * (configured limit names), model (configured model names, "*" for any other). Tenant ids never
 * appear, unless the operator opts in with TOLLGATE_METRICS_TENANT_LABEL=true, which adds the
 * separate series tollgate_tenant_decisions_total{tenant=<12-hex hash of the tenant id>}.
 */

import client from 'prom-client';
import type { Config } from '../config/types.js';
import type { Decision } from '../decision/types.js';
import type { BreakerState } from '../resilience/breaker.js';
import { CacheMetrics } from './cache-metrics.js';
import { SettleMetrics } from './settle-metrics.js';

/**
 * What happened to the call, one value per decision (the series sum to all decisions):
 * allow, reroute (allowed on a fallback model), degraded (allowed or decided locally because the
 * store failed), queued, deny (rate-limited, never fits, store unavailable, non-LLM path refused),
 * bad_request.
 */
export type Outcome = 'allow' | 'reroute' | 'degraded' | 'queued' | 'deny' | 'bad_request' | 'cache';

export function outcomeOf(d: Decision): Outcome {
  const reason = d.reason as string;
  if (d.kind === 'allow') {
    if (reason === 'rerouted') return 'reroute';
    if (reason === 'degraded') return 'degraded';
    return 'allow';
  }
  if (reason === 'cache-hit') return 'cache';
  if (reason === 'queued' || d.httpStatus === 202) return 'queued';
  if (reason === 'bad-request') return 'bad_request';
  return 'deny';
}

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, 'half-open': 1, open: 2 };

export interface MetricsOptions {
  /** Add tollgate_tenant_decisions_total (tenant = hashed tenant id). Unbounded: opt-in only. */
  tenantLabel?: boolean;
}

/** A counter that mirrors a running total kept elsewhere (`read`), brought up to date at scrape time. */
export function mirrorCounter(
  registry: client.Registry,
  name: string,
  help: string,
  read: () => number | undefined,
): client.Counter {
  let seen = 0;
  const counter: client.Counter = new client.Counter({
    name,
    help,
    registers: [registry],
    collect: () => {
      const v = read() ?? 0;
      if (v > seen) counter.inc(v - seen);
      seen = v;
    },
  });
  return counter;
}

export class Metrics {
  /**
   * Per label combination (bounded by the config): the prom-client children plus counts not yet
   * handed to them. prom-client validates and hashes the labels on every inc(), even on a child, so
   * the hot path adds to plain numbers and flush() (run by the counters' collect(), i.e. on every
   * scrape or read) moves them over. Only the latency histogram is observed per call.
   */
  private readonly children = new Map<
    string,
    {
      decisions: { inc(v?: number): void };
      latency: { observe(v: number): void };
      prompt: { inc(v?: number): void };
      reserved: { inc(v?: number): void };
      dollars: { inc(v?: number): void };
      n: number;
      promptTokens: number;
      reservedTokens: number;
      micros: number;
    }
  >();

  /** Hand the counts accumulated since the last flush to prom-client (idempotent). */
  flush(): void {
    for (const c of this.children.values()) {
      if (c.n) c.decisions.inc(c.n);
      if (c.promptTokens) c.prompt.inc(c.promptTokens);
      if (c.reservedTokens) c.reserved.inc(c.reservedTokens);
      if (c.micros) c.dollars.inc(c.micros / 1e6);
      c.n = 0;
      c.promptTokens = 0;
      c.reservedTokens = 0;
      c.micros = 0;
    }
  }
  readonly registry = new client.Registry();
  /** The response phase's metrics (settle-metrics.ts; fed by settle-observe.ts). */
  readonly settle = new SettleMetrics(this.registry);
  readonly cache = new CacheMetrics(this.registry);
  /** The config last loaded (configLoaded): bounds the model label of settlements. */
  private loaded?: Config;
  /** Read at scrape time (the breaker turns half-open by the clock, without a call). */
  breakerSource?: () => BreakerState;
  inflightSource?: () => number;
  /** Store timeouts the breaker forgave (the reply came late): read at scrape time. */
  forgivenSource?: () => number;
  readonly forgiven = mirrorCounter(
    this.registry,
    'tollgate_store_timeouts_forgiven_total',
    'Store calls that timed out but whose reply arrived late (store slow, not down): answered per on_store_failure, not counted by the breaker',
    () => this.forgivenSource?.(),
  );

  /** Checks that waited for a later event-loop turn (server.checks_per_turn): read at scrape time. */
  deferredSource?: () => number;
  readonly deferred = mirrorCounter(
    this.registry,
    'tollgate_checks_deferred_total',
    'Checks that arrived in a burst larger than server.checks_per_turn and were decided in a later event-loop turn (first come, first served)',
    () => this.deferredSource?.(),
  );

  readonly decisions = new client.Counter({
    name: 'tollgate_decisions_total',
    help: 'Decisions by outcome (allow, reroute, degraded, queued, deny, bad_request), reason, binding limit and model',
    labelNames: ['outcome', 'reason', 'limit', 'model'] as const,
    registers: [this.registry],
    collect: () => this.flush(),
  });
  readonly tokens = new client.Counter({
    name: 'tollgate_tokens_total',
    help: 'Tokens of admitted calls by model and type: prompt (counted or estimated) and reserved (output budget)',
    labelNames: ['model', 'type'] as const,
    registers: [this.registry],
    collect: () => this.flush(),
  });
  readonly dollars = new client.Counter({
    name: 'tollgate_reserved_dollars_total',
    help: 'US dollars reserved by admitted calls (prompt + reserved output at configured prices), by model',
    labelNames: ['model'] as const,
    registers: [this.registry],
    collect: () => this.flush(),
  });
  readonly unknownModels = new client.Counter({
    name: 'tollgate_unknown_model_total',
    help: 'Calls whose model matched no configured model or alias (charged and limited as "*")',
    registers: [this.registry],
  });
  readonly latency = new client.Histogram({
    name: 'tollgate_decision_duration_seconds',
    help: 'Time to decide one check, from request to answer, by outcome',
    labelNames: ['outcome'] as const,
    buckets: [
      0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    ],
    registers: [this.registry],
  });
  readonly storeLatency = new client.Histogram({
    name: 'tollgate_store_duration_seconds',
    help: 'Duration of store (Valkey) check calls, by result (ok, error)',
    labelNames: ['result'] as const,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  readonly storeErrors = new client.Counter({
    name: 'tollgate_store_errors_total',
    help: 'Store (Valkey) calls that failed',
    registers: [this.registry],
  });
  readonly breaker: client.Gauge;
  readonly breakerTransitions = new client.Counter({
    name: 'tollgate_breaker_transitions_total',
    help: 'Store circuit breaker state changes, by new state',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly reloads = new client.Counter({
    name: 'tollgate_config_reloads_total',
    help: 'Configuration reloads by result (success, failure)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly lastReloadOk = new client.Gauge({
    name: 'tollgate_config_last_reload_successful',
    help: '1 if the last configuration (re)load succeeded, 0 if it failed (the previous config is running)',
    registers: [this.registry],
  });
  readonly lastReloadTime = new client.Gauge({
    name: 'tollgate_config_last_reload_success_timestamp_seconds',
    help: 'When the running configuration was loaded (Unix time)',
    registers: [this.registry],
  });
  readonly limits = new client.Gauge({
    name: 'tollgate_config_limits',
    help: 'Limits in the running configuration',
    registers: [this.registry],
  });
  readonly inflight: client.Gauge;
  /** storeLatency's two children, looked up once instead of hashing a labels object per check. */
  private readonly storeOk = this.storeLatency.labels('ok');
  private readonly storeError = this.storeLatency.labels('error');
  readonly tenantDecisions?: client.Counter<'tenant' | 'outcome'>;

  constructor(opts: MetricsOptions = {}) {
    client.collectDefaultMetrics({ register: this.registry });
    // prom-client's gauges named *_total fail `promtool check metrics` (only counters end in _total);
    // the same counts stay exported per type: nodejs_active_handles{type}, ..._requests, ..._resources
    for (const name of ['handles', 'requests', 'resources'])
      this.registry.removeSingleMetric(`nodejs_active_${name}_total`);
    const self = this;
    this.breaker = new client.Gauge({
      name: 'tollgate_breaker_state',
      help: 'Store circuit breaker state: 0 closed, 1 half-open, 2 open',
      registers: [this.registry],
      collect() {
        if (self.breakerSource) this.set(BREAKER_VALUE[self.breakerSource()]);
      },
    });
    this.inflight = new client.Gauge({
      name: 'tollgate_inflight_checks',
      help: 'Checks being decided right now (gRPC and HTTP)',
      registers: [this.registry],
      collect() {
        if (self.inflightSource) this.set(self.inflightSource());
      },
    });
    if (opts.tenantLabel) {
      this.tenantDecisions = new client.Counter({
        name: 'tollgate_tenant_decisions_total',
        help: 'Decisions by tenant (12-hex SHA-256 tag of the tenant id, as in the logs) and outcome. Opt-in: unbounded',
        labelNames: ['tenant', 'outcome'] as const,
        registers: [this.registry],
      });
    }
    this.reloads.inc({ result: 'success' }, 0);
    this.reloads.inc({ result: 'failure' }, 0);
    this.storeErrors.inc(0);
    // every labelled series exists from the start (dashboards and alerts see 0, not "no data")
    for (const result of ['ok', 'error']) this.storeLatency.zero({ result });
    for (const state of ['closed', 'half-open', 'open']) this.breakerTransitions.inc({ state }, 0);
    this.unknownModels.inc(0);
    this.breaker.set(0);
    this.lastReloadOk.set(1);
    this.lastReloadTime.setToCurrentTime();
  }

  modelLabel(cfg: Config, model: string | undefined): string {
    if (!model) return '';
    return cfg.models.has(model) ? model : '*';
  }

  observe(cfg: Config, d: Decision, seconds: number): void {
    const s = d.stats;
    const outcome = outcomeOf(d);
    const model = this.modelLabel(cfg, s.chosenModel ?? s.model);
    // Children are looked up once per label combination (bounded by the config), not hashed per call.
    const limit = s.limit ?? '';
    const key = `${outcome}\u0000${d.reason}\u0000${limit}\u0000${model}`;
    let child = this.children.get(key);
    if (!child) {
      child = {
        decisions: this.decisions.labels(outcome, d.reason, limit, model),
        latency: this.latency.labels(outcome),
        prompt: this.tokens.labels(model, 'prompt'),
        reserved: this.tokens.labels(model, 'reserved'),
        dollars: this.dollars.labels(model),
        n: 0,
        promptTokens: 0,
        reservedTokens: 0,
        micros: 0,
      };
      this.children.set(key, child);
    }
    child.n++;
    child.latency.observe(seconds);
    if (d.kind === 'allow' && s.promptTokens !== undefined) {
      child.promptTokens += s.promptTokens;
      child.reservedTokens += s.reservedTokens ?? 0;
      if (s.micros) child.micros += s.micros;
    }
    if (s.unknownModel) this.unknownModels.inc();
    if (this.tenantDecisions && s.tenantTag) this.tenantDecisions.inc({ tenant: s.tenantTag, outcome });
  }

  configLoaded(cfg: Config): void {
    this.loaded = cfg;
    this.limits.set(cfg.limits.length);
  }

  /** A settled call's model as a label: a configured model name (of `cfg`, else the config last loaded), else "*". */
  settleModelLabel(model: string, cfg: Config | undefined = this.loaded): string {
    return cfg?.models.has(model) ? model : '*';
  }

  reloaded(ok: boolean, cfg?: Config): void {
    this.reloads.inc({ result: ok ? 'success' : 'failure' });
    this.lastReloadOk.set(ok ? 1 : 0);
    if (ok) {
      this.lastReloadTime.setToCurrentTime();
      if (cfg) this.configLoaded(cfg);
    }
  }

  setBreaker(state: BreakerState): void {
    this.breaker.set(BREAKER_VALUE[state]);
    this.breakerTransitions.inc({ state });
  }

  storeCall(seconds: number, ok: boolean): void {
    (ok ? this.storeOk : this.storeError).observe(seconds);
    if (!ok) this.storeErrors.inc();
  }
}
