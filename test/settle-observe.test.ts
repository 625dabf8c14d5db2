/**
 * The settlement observer (src/ops/settle-observe.ts): SettledEvents in, the registry's text and the
 * log lines out. Model labels are bounded by the config; anomalies are logged at info, the rest at
 * debug; never a raw reservation id, key or prompt.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { Metrics } from '../src/ops/metrics.js';
import { settleObserver } from '../src/ops/settle-observe.js';
import type { ActualTokens, Settlement } from '../src/policy/settle.js';
import type { SettledEvent } from '../src/settle/settler.js';
import { captureLogger, parseMetrics } from './fixtures/ops/ops.js';

const cfg = parseConfigText(`
models:
  gpt-4o-mini: { encoding: o200k_base, price_usd_per_1m: { input: 0.15, output: 0.60 } }
  "*": { encoding: cl100k_base }
limits:
  - { name: tokens, per: tenant, tokens: 100000, every: 1h }
`);

const tokens = (t: Partial<ActualTokens>): ActualTokens => ({
  prompt: 0,
  cachedPrompt: 0,
  cacheWrite: 0,
  output: 0,
  reasoning: 0,
  ...t,
});
const settlement = (t: ActualTokens, micros: number, reservedTokens: number): Settlement => ({
  actual: [],
  tokens: t,
  micros,
  reservedTokens,
  reservedMicros: micros * 2,
});
const ID = 'mabc123.AAAAAAAAAAAAAAAAAAAAAA';

async function scrape(m: Metrics) {
  const { samples } = parseMetrics(await m.registry.metrics());
  const get = (name: string, labels: Record<string, string> = {}) =>
    samples
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((n, s) => n + s.value, 0);
  return { samples, get };
}

describe('settleObserver', () => {
  it('counts settlements by outcome (every outcome exported from the start), tokens by kind, dollars, refunds and overruns', async () => {
    const m = new Metrics();
    m.configLoaded(cfg);
    const log = captureLogger('info');
    const observe = settleObserver(m, log.logger);
    const before = await scrape(m);
    for (const outcome of [
      'settled',
      'estimated',
      'upstream_error',
      'kept',
      'duplicate',
      'expired',
      'unmatched',
      'failed',
    ])
      expect(
        before.samples.some((s) => s.name === 'tollgate_settlements_total' && s.labels.outcome === outcome),
      ).toBe(true);

    const events: SettledEvent[] = [
      {
        outcome: 'settled',
        id: ID,
        model: 'gpt-4o-mini',
        settlement: settlement(
          tokens({ prompt: 1000, cachedPrompt: 400, output: 200, reasoning: 50 }),
          330,
          4800,
        ),
        refundedTokens: 3600,
        remaining: [1],
      },
      {
        outcome: 'estimated',
        id: ID,
        model: 'gpt-4o-mini',
        settlement: settlement(tokens({ prompt: 500, cacheWrite: 100, output: 700 }), 500, 1000),
        refundedTokens: -200,
      },
      {
        outcome: 'upstream_error',
        id: ID,
        model: 'a-model-not-in-the-config',
        settlement: settlement(tokens({}), 0, 900),
        refundedTokens: 900,
      },
      { outcome: 'kept', id: ID, model: 'gpt-4o-mini', refundedTokens: 0 },
      { outcome: 'duplicate', id: ID },
      { outcome: 'expired', id: ID },
      { outcome: 'unmatched', id: 'forged' },
      { outcome: 'failed', id: ID, model: 'gpt-4o-mini' },
    ];
    for (const e of events) observe(e);

    const { samples, get } = await scrape(m);
    for (const e of events) expect(get('tollgate_settlements_total', { outcome: e.outcome })).toBe(1);
    const t = (kind: string) => get('tollgate_actual_tokens_total', { model: 'gpt-4o-mini', kind });
    expect(t('prompt')).toBe(1500);
    expect(t('cached')).toBe(400);
    expect(t('cache_write')).toBe(100);
    expect(t('output')).toBe(900);
    expect(t('reasoning')).toBe(50);
    expect(get('tollgate_actual_dollars_total', { model: 'gpt-4o-mini' })).toBeCloseTo(830 / 1e6, 12);
    expect(get('tollgate_refunded_tokens_total')).toBe(3600 + 900);
    expect(get('tollgate_overrun_tokens_total')).toBe(200);
    // reserved ÷ actual: settled 4800/1200 = 4, estimated 1000/1200 ≈ 0.83 (upstream errors not measured)
    expect(get('tollgate_reserved_to_actual_ratio_count')).toBe(2);
    expect(get('tollgate_reserved_to_actual_ratio_sum')).toBeCloseTo(4 + 1000 / 1200, 9);
    expect(get('tollgate_reserved_to_actual_ratio_bucket', { le: '1' })).toBe(1);
    expect(get('tollgate_reserved_to_actual_ratio_bucket', { le: '3' })).toBe(1);
    expect(get('tollgate_reserved_to_actual_ratio_bucket', { le: '5' })).toBe(2);
    expect(get('tollgate_reserved_to_actual_ratio_bucket', { le: '50' })).toBe(2);
    // model labels: configured names or "*", nothing else
    const models = new Set(
      samples.filter((s) => s.name.startsWith('tollgate_actual_')).map((s) => s.labels.model),
    );
    expect([...models].sort()).toEqual(['gpt-4o-mini']);
    expect(samples.some((s) => s.labels.model === 'a-model-not-in-the-config')).toBe(false);

    // at info: the anomalies only, one line each, with a tag of the id and never the id itself
    const lines = log.lines().filter((l) => l.msg === 'settlement');
    expect(lines.map((l) => l.outcome)).toEqual(['expired', 'unmatched', 'failed']);
    expect(lines.every((l) => /^[0-9a-f]{12}$/.test(l.reservation))).toBe(true);
    expect(log.text()).not.toContain(ID);
    expect(log.text()).not.toContain('forged');
  });

  it('at debug: one line per settlement with the usage; an unknown model is "*"', async () => {
    const m = new Metrics();
    const log = captureLogger('debug');
    const observe = settleObserver(m, log.logger, { config: cfg });
    observe({
      outcome: 'settled',
      id: ID,
      model: 'some-fine-tune-9',
      settlement: settlement(tokens({ prompt: 10, output: 5 }), 7, 30),
      refundedTokens: 15,
    });
    observe({ outcome: 'duplicate', id: ID });
    const lines = log.lines().filter((l) => l.msg === 'settlement');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({
      level: 20,
      outcome: 'settled',
      model: '*',
      prompt_tokens: 10,
      output_tokens: 5,
      reserved_tokens: 30,
      micros: 7,
      refunded_tokens: 15,
    });
    expect(lines[1]).toMatchObject({ level: 20, outcome: 'duplicate' });
    const { get } = await scrape(m);
    expect(get('tollgate_actual_tokens_total', { model: '*', kind: 'prompt' })).toBe(10);
    expect(get('tollgate_actual_dollars_total', { model: '*' })).toBeCloseTo(7e-6, 12);
  });

  it('without any config loaded every model is "*" (bounded from the first event)', async () => {
    const m = new Metrics();
    const observe = settleObserver(m, captureLogger('info').logger);
    observe({
      outcome: 'settled',
      id: ID,
      model: 'gpt-4o-mini',
      settlement: settlement(tokens({ output: 3 }), 1, 3),
    });
    const { samples } = await scrape(m);
    const labels = samples
      .filter((s) => s.name === 'tollgate_actual_tokens_total')
      .map((s) => s.labels.model);
    expect(labels).toEqual(['*']);
  });
});
