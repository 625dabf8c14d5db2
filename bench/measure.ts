/**
 * One measured load run (the load generator against one server, its CPU and RSS read meanwhile), and
 * the soak run.
 */
import type { LoadResult, LoadSpec } from './loadgen.js';
import { cpuTicks, Meter, type ProcUsage, rssMb, runChild, type Server, type ServerName } from './procs.js';
import { CLK_TCK, CONCURRENCY, DURATION_MS, env, OPEN_WARMUP_MS, WARMUP_MS } from './settings.js';
import { AGENT_CONVERSATIONS } from './streams.js';
import type { WorkloadName } from './workloads.js';

export interface RunRow {
  workload: WorkloadName;
  mode: 'closed' | 'open';
  server: ServerName;
  rate?: number;
  result: LoadResult;
  server_usage: ProcUsage;
  valkey_usage?: ProcUsage;
  loadgen_cpu_percent: number;
  /** Server CPU (µs, /proc/<pid>/stat, every thread) per check in the measured window. */
  cpu_us_per_check: number;
  /** Closed loop: checks/s of every round, in order (the row is the median round). */
  rounds_per_second?: number[];
  /** Closed loop, tollgate rows: this server's checks/s over the null server's, per round. */
  rounds_vs_null?: number[];
  /** Open loop: p99 (ms, small calls) of every round, in order (the row is the median round). */
  rounds_p99?: number[];
  /** Open loop, tollgate rows: this server's p99 over the null server's, per round. */
  rounds_p99_vs_null?: number[];
}

export async function load(
  s: Server,
  workload: WorkloadName,
  mode: 'closed' | 'open',
  valkeyPid: number | undefined,
  rate?: number,
): Promise<RunRow> {
  const spec: LoadSpec = {
    port: s.grpcPort,
    workload,
    mode,
    durationMs: DURATION_MS,
    warmupMs: mode === 'open' ? OPEN_WARMUP_MS : WARMUP_MS,
    concurrency: CONCURRENCY,
    rate,
  };
  if (workload === 'agent') {
    // every conversation's first call in a run counts its whole history: keep those in the warm-up
    spec.warmupCalls = 2 * AGENT_CONVERSATIONS;
    if (mode === 'open' && rate) spec.warmupMs = Math.max(spec.warmupMs, (2000 * spec.warmupCalls) / rate);
  }
  const m = new Meter(s.proc.pid!);
  const vm = valkeyPid && s.name === 'valkey' ? new Meter(valkeyPid) : undefined;
  // CPU per check: server CPU time between the generator's "measuring" mark and its result line,
  // over the calls measured in that window.
  let windowTicks0 = -1;
  let windowTicks = 0;
  const { out, cpuPercent } = await runChild<LoadResult>('loadgen.js', spec, (line) => {
    if (line === 'measuring') windowTicks0 = cpuTicks(s.proc.pid!);
    else if (line.startsWith('{') && windowTicks0 >= 0) windowTicks = cpuTicks(s.proc.pid!) - windowTicks0;
  });
  const row: RunRow = {
    workload,
    mode,
    server: s.name,
    rate,
    result: out,
    server_usage: m.stop(),
    valkey_usage: vm?.stop(),
    loadgen_cpu_percent: cpuPercent,
    cpu_us_per_check: 0,
  };
  row.cpu_us_per_check = Math.round(((windowTicks / CLK_TCK) * 1e6) / Math.max(1, out.calls));
  const l = out.latency;
  console.error(
    `  ${workload.padEnd(6)} ${mode.padEnd(6)} ${s.name.padEnd(6)} ${String(out.perSecond).padStart(6)}/s` +
      ` p50 ${l.p50} p99 ${l.p99} p999 ${l.p999} ms  ok ${out.ok} denied ${out.denied} degraded ${out.degraded} err ${out.errors}` +
      `  cpu ${row.server_usage.cpuPercent}% ${row.cpu_us_per_check} µs/check (loadgen ${cpuPercent}%) rss ${row.server_usage.rssMaxMb} MB` +
      `${out.lateSends !== undefined ? `  late sends ${out.lateSends}` : ''}${out.firstError ? `  (${out.firstError})` : ''}`,
  );
  return row;
}

/** Open loop at `rate` for BENCH_SOAK_S (300) seconds against one server; RSS sampled every 5 s. */
export async function runSoak(s: Server, rate: number) {
  const secs = Number(env.BENCH_SOAK_S ?? 300);
  console.error(`  soak: ${s.name} @${rate}/s for ${secs} s …`);
  const samples: number[] = [];
  const timer = setInterval(() => samples.push(rssMb(s.proc.pid!)), 5000);
  const spec: LoadSpec = {
    port: s.grpcPort,
    workload: 'mix',
    mode: 'open',
    durationMs: secs * 1000,
    warmupMs: 0,
    rate,
  };
  const { out } = await runChild<LoadResult>('loadgen.js', spec);
  clearInterval(timer);
  const firstMinute = samples.slice(0, 12);
  const lastMinute = samples.slice(-12);
  const avg = (xs: number[]) =>
    Math.round((xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)) * 10) / 10;
  return {
    server: s.name,
    workload: 'mix',
    seconds: secs,
    rate,
    calls: out.calls,
    errors: out.errors,
    p99_ms: out.latency.p99,
    rss_first_minute_avg_mb: avg(firstMinute),
    rss_last_minute_avg_mb: avg(lastMinute),
    rss_max_mb: Math.max(...samples),
    rss_samples_mb: samples,
  };
}
