/**
 * deploy/grafana/tollgate.json against a REAL Prometheus (Debian's `prometheus`, installed by
 * scripts/test-setup.sh) scraping a real tollgate every second after real decisions (allow, reroute,
 * deny, never-fits) and settlements (ext_proc): every query of every panel (Grafana's variables
 * substituted) must succeed on Prometheus's HTTP API and name only metrics tollgate exports; the
 * core panels must have data. `promtool check metrics` passes on tollgate's /metrics text.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chat } from './helpers/envoy.js';
import { chatJson } from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { freePort } from './helpers/valkey.js';

const DASHBOARD = new URL('../deploy/grafana/tollgate.json', import.meta.url);
const PROMETHEUS = process.env.PROMETHEUS_BIN || 'prometheus';
const PROMTOOL = process.env.PROMTOOL_BIN || 'promtool';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00 }
    fallback: gpt-4o-mini
  gpt-4o-mini:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.15, output: 0.60 }
  "*":
    encoding: o200k_base
    default_max_output_tokens: 100
limits:
  - { name: big-model-tokens, per: tenant, tokens: 1000, every: 1h, models: [gpt-4o] }
  - { name: tenant-tokens, per: tenant, tokens: 5000, every: 1h }
queues:
  overflow: { max_length: 100 }   # (the queue length panel: 0 on the in-memory store)
`;

/** Grafana's variables as the test substitutes them. */
const VARIABLES: Record<string, string> = { __rate_interval: '1m', __range: '1m', model: '.*' };

interface Target {
  panel: string;
  expr: string;
}

function targetsOf(dashboard: any): Target[] {
  const out: Target[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push({ panel: p.title, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dashboard.panels);
  return out;
}

function substitute(expr: string): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a: string | undefined, b: string | undefined) => {
    const name = (a ?? b)!;
    const v = VARIABLES[name];
    if (v === undefined) throw new Error(`unknown Grafana variable $${name} in ${expr}`);
    return v;
  });
}

/** Metric names a PromQL expression references (tollgate's and the default process metrics). */
const metricNames = (expr: string) => [
  ...new Set([...expr.matchAll(/\b((?:tollgate|process|nodejs)_[a-z0-9_]+)\b/g)].map((m) => m[1])),
];

/** Sample names in Prometheus text exposition. */
const exported = (text: string) =>
  new Set(
    text
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(l)![0]),
  );

let s: SettleApp;
let prom: ChildProcess | undefined;
let promPort = 0;
let dir = '';
let metricsText = '';

async function promQuery(expr: string): Promise<any> {
  const r = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?${new URLSearchParams({ query: expr })}`);
  return r.json();
}

async function decide(): Promise<void> {
  const t = { 'x-tenant-id': 'acme' };
  const ok = await s.envoy.check({ headers: t, body: chat('gpt-4o', 'hello', { max_tokens: 300 }) });
  expect(ok.allowed).toBe(true);
  const ev = await s.settle({
    id: ok.reservation,
    headers: { 'content-type': 'application/json' },
    chunks: [chatJson(12, 40)],
  });
  expect(ev?.outcome).toBe('settled');
  // gpt-4o's 1000 tokens: the next call is rerouted to gpt-4o-mini
  const rerouted = await s.envoy.check({ headers: t, body: chat('gpt-4o', 'hello', { max_tokens: 960 }) });
  expect(rerouted.upstream['x-tollgate-model']).toBe('gpt-4o-mini');
  const denied = await s.envoy.check({ headers: t, body: chat('gpt-4o-mini', 'hi', { max_tokens: 4900 }) });
  expect(denied.httpStatus).toBe(429);
  const never = await s.envoy.check({ headers: t, body: chat('gpt-4o-mini', 'hi', { max_tokens: 9000 }) });
  expect(never.headers['x-should-retry']).toBe('false');
}

beforeAll(async () => {
  s = await startSettleApp(CONFIG);
  await decide();
  metricsText = await (await fetch(`http://127.0.0.1:${s.app.httpPort}/metrics`)).text();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-prometheus-'));
  writeFileSync(
    join(dir, 'prometheus.yml'),
    [
      'global: { scrape_interval: 1s, evaluation_interval: 1s }',
      'scrape_configs:',
      '  - job_name: tollgate',
      `    static_configs: [{ targets: ["127.0.0.1:${s.app.httpPort}"] }]`,
      '',
    ].join('\n'),
  );
  promPort = await freePort();
  prom = spawn(
    PROMETHEUS,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--web.console.templates=/nonexistent',
      '--web.console.libraries=/nonexistent',
    ],
    { stdio: 'ignore' },
  );
  // scraped at least three times (rate() needs two samples), the last after every decision
  let ready = false;
  for (const until = Date.now() + 30_000; !ready && Date.now() < until; ) {
    await new Promise((r) => setTimeout(r, 250));
    const r = await promQuery('count_over_time(up{job="tollgate"}[1m]) >= 3').catch(() => undefined);
    ready = r?.data?.result?.[0]?.value?.[1] !== undefined;
  }
  expect(ready).toBe(true);
}, 60_000);

afterAll(async () => {
  if (prom && prom.exitCode === null) {
    const exited = new Promise((r) => prom!.once('exit', r));
    prom.kill('SIGTERM');
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
  await s?.close();
});

describe('Grafana dashboard on a real Prometheus', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  const targets = targetsOf(dashboard);

  it('covers what operators watch', () => {
    expect(dashboard.uid).toBe('tollgate');
    expect(targets.length).toBeGreaterThanOrEqual(30);
    const all = targets.map((t) => t.expr).join('\n');
    for (const m of [
      'tollgate_decisions_total',
      'tollgate_tokens_total',
      'tollgate_actual_tokens_total',
      'tollgate_reserved_dollars_total',
      'tollgate_actual_dollars_total',
      'tollgate_settlements_total',
      'tollgate_reserved_to_actual_ratio_bucket',
      'tollgate_store_duration_seconds_bucket',
      'tollgate_store_errors_total',
      'tollgate_breaker_state',
      'tollgate_config_reloads_total',
      'tollgate_store_waiting_checks',
      'tollgate_deny_cache_hits_total',
      'tollgate_overloaded_total',
    ])
      expect(all).toContain(m);
  });

  it('every query names only metrics tollgate exports', () => {
    const names = exported(metricsText);
    const missing = targets.flatMap((t) => metricNames(t.expr).filter((n) => !names.has(n)));
    expect(missing).toEqual([]);
  });

  it('every query succeeds on Prometheus', async () => {
    const failed: string[] = [];
    for (const t of targets) {
      const r = await promQuery(substitute(t.expr));
      if (r.status !== 'success') failed.push(`${t.panel}: ${t.expr}: ${r.error}`);
    }
    expect(failed).toEqual([]);
  });

  it('the core panels show the decisions made', async () => {
    const series = async (expr: string) => (await promQuery(substitute(expr))).data.result as any[];
    const find = (title: string) => targets.find((t) => t.panel === title)!.expr;
    const outcomes = (await series(find('Decisions by outcome'))).map((r) => r.metric.outcome).sort();
    expect(outcomes).toEqual(['allow', 'deny', 'reroute']);
    const denies = (await series(find('Denies by limit'))).map((r) => r.metric.limit);
    expect(denies).toContain('tenant-tokens');
    const settled = await series(find('Settlements by outcome'));
    expect(settled.map((r) => r.metric.outcome)).toContain('settled');
    const actual = await series('sum by (model) (tollgate_actual_tokens_total{kind="output"})');
    expect(actual).toEqual([
      expect.objectContaining({ metric: { model: 'gpt-4o' }, value: [expect.anything(), '40'] }),
    ]);
  });

  it('promtool check metrics passes on /metrics', () => {
    const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: metricsText, encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
    expect(r.status).toBe(0);
  });
});
