/**
 * The result JSON (bench/results/latest.json, and BENCH_OUT): machine, settings, every run and round,
 * the targets' verdicts, the store-level, token-counter and soak runs.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import type { RunRow } from './measure.js';
import type { Server } from './procs.js';
import { CONCURRENCY, DURATION_MS, env, OPEN_WARMUP_MS, ROOT, WARMUP_MS } from './settings.js';
import type { Settlements } from './settle-checks.js';
import type { StoreRow } from './store-bench.js';
import type { TokenizerRow } from './tokenizer-bench.js';
import type { summarize } from './verdicts.js';
import type { WorkloadName } from './workloads.js';

export type Machine = ReturnType<typeof machineInfo>;

export function machineInfo() {
  return {
    nproc: cpus().length,
    cpu_model: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown',
    node: process.version,
    valkey: execFileSync('valkey-server', ['--version'], { encoding: 'utf8' }).trim(),
    date: new Date().toISOString(),
    loadavg_at_start: loadavg().map((x) => Math.round(x * 100) / 100),
    /** 0: the null server answers every check in the turn it arrived (the floor the issue defines). */
    null_checks_per_turn: Number(env.NULL_CHECKS_PER_TURN ?? 0),
  };
}

export interface ReportParts {
  started: number;
  machine: Machine;
  servers: Server[];
  rates: Partial<Record<WorkloadName, number>>;
  summary: ReturnType<typeof summarize>;
  rows: RunRow[];
  all: RunRow[];
  store?: StoreRow[];
  tokenizers?: TokenizerRow[];
  soak?: unknown;
  /** settle: tollgate_settlements_total by outcome, per tollgate server, read at the end. */
  settlements?: Settlements;
}

export function buildReport(p: ReportParts) {
  const { machine, servers, rates, summary, rows, all, store, tokenizers, soak, settlements } = p;
  return {
    machine,
    settings: {
      duration_s: DURATION_MS / 1000,
      warmup_s: WARMUP_MS / 1000,
      open_warmup_s: OPEN_WARMUP_MS / 1000,
      concurrency: CONCURRENCY,
    },
    startup: Object.fromEntries(servers.map((s) => [s.name, { ms: s.startupMs, idle_rss_mb: s.idleRssMb }])),
    rates,
    summary,
    runs: rows,
    // every round, compact (runs holds each server's median round in full)
    all_rounds: all.map((r) => ({
      workload: r.workload,
      mode: r.mode,
      server: r.server,
      per_second: r.result.perSecond,
      p99_ms: r.result.smallLatency.p99,
      calls: r.result.calls,
      degraded: r.result.degraded,
      late_sends: r.result.lateSends,
      rss_max_mb: r.server_usage.rssMaxMb,
      cpu_percent: r.server_usage.cpuPercent,
      cpu_us_per_check: r.cpu_us_per_check,
      loadgen_cpu_percent: r.loadgen_cpu_percent,
    })),
    store,
    tokenizers,
    soak,
    settlements,
    bench_seconds: Math.round((performance.now() - p.started) / 1000),
    loadavg_at_end: loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/** bench/results/latest.json, and a copy at BENCH_OUT when set. */
export function writeReport(report: unknown): void {
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const json = `${JSON.stringify(report, null, 2)}\n`;
  writeFileSync(join(ROOT, 'bench', 'results', 'latest.json'), json);
  if (env.BENCH_OUT) writeFileSync(resolve(env.BENCH_OUT), json);
}
