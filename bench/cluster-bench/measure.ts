/**
 * One run: tollgate on a backend under the load generator (bench/loadgen.ts, its own process, through
 * bench/procs.ts's runChild); CPU of tollgate and every Valkey process, INFO commandstats and /metrics
 * read at both ends of the measured window; the script calls captured during the warm-up.
 */
import type { LoadResult, LoadSpec } from '../loadgen.js';
import { cpuTicks, runChild, type Server } from '../procs.js';
import { CLK_TCK, DURATION_MS, WARMUP_MS } from '../settings.js';
import { tenantsPerPrimary } from './backends.js';
import {
  type Backend,
  type Captured,
  CONCURRENCY,
  type PrimaryRow,
  type RunName,
  type RunRow,
  r1,
} from './common.js';
import { addPending } from './probes.js';
import { metrics, startTollgate, stopTollgate } from './tollgate.js';
import { allCalls, captureScripts, commandStats, delta, scriptCalls } from './valkey-stats.js';

type Stats = Map<number, Record<string, number>>;

interface Snapshot {
  at: number;
  tollgate: number;
  valkey: Map<number, number>;
  stats: Promise<Stats>;
  metrics: Promise<{ spanning: number; compensations: number }>;
}

/** The measured window: both snapshots, their commandstats resolved, and its length. */
interface Window {
  s0: Snapshot;
  s1: Snapshot;
  st0: Stats;
  st1: Stats;
  secs: number;
}

const primariesOf = (b: Backend) => b.nodes.filter((n) => n.role === 'primary');

function snapshot(tg: Server, backend: Backend): Snapshot {
  const at = performance.now();
  const tollgate = cpuTicks(tg.proc.pid!);
  const valkey = new Map(backend.nodes.map((n) => [n.port, cpuTicks(n.pid)]));
  const stats = (async () => {
    const m: Stats = new Map();
    for (const p of primariesOf(backend)) m.set(p.port, await commandStats(backend.client(p.port)));
    return m;
  })();
  return { at, tollgate, valkey, stats, metrics: metrics(tg.httpPort) };
}

/** Per primary: script calls, commands, CPU, keys and tenants; and the script calls and commands summed. */
async function primaryRows(backend: Backend, w: Window) {
  const { s0, s1, st0, st1, secs } = w;
  const keys = new Map<number, number>();
  for (const p of primariesOf(backend)) keys.set(p.port, Number(await backend.client(p.port).dbsize()));
  const tenants = await tenantsPerPrimary(backend);
  let scripts = 0;
  let commands = 0;
  const rows: PrimaryRow[] = primariesOf(backend).map((p) => {
    const sc = scriptCalls(st1.get(p.port)!) - scriptCalls(st0.get(p.port)!);
    const all = allCalls(st1.get(p.port)!) - allCalls(st0.get(p.port)!);
    scripts += sc;
    commands += all;
    const ticks = s1.valkey.get(p.port)! - s0.valkey.get(p.port)!;
    return {
      port: p.port,
      scriptCallsPerSecond: Math.round(sc / secs),
      commandsPerSecond: Math.round(all / secs),
      cpuPercent: r1((ticks / CLK_TCK / secs) * 100),
      keys: keys.get(p.port) ?? 0,
      tenants: tenants.get(p.port) ?? 0,
      commands: delta(st0.get(p.port)!, st1.get(p.port)!),
    };
  });
  return { rows, scripts, commands };
}

/** The run's row from the load generator's result and the measured window. */
async function runRow(
  run: RunName,
  description: string,
  backend: Backend,
  load: { out: LoadResult; cpuPercent: number },
  s0: Snapshot,
  s1: Snapshot,
): Promise<RunRow> {
  const { out, cpuPercent } = load;
  const secs = (s1.at - s0.at) / 1000;
  const us = (ticks: number) => (ticks / CLK_TCK) * 1e6;
  const checks = Math.max(1, out.calls);
  const [st0, st1, m0, m1] = await Promise.all([s0.stats, s1.stats, s0.metrics, s1.metrics]);
  const valkeyTicks = (role: 'primary' | 'replica') =>
    backend.nodes
      .filter((n) => n.role === role)
      .reduce((t, n) => t + s1.valkey.get(n.port)! - s0.valkey.get(n.port)!, 0);
  const { rows, scripts, commands } = await primaryRows(backend, { s0, s1, st0, st1, secs });
  const primaryTicks = valkeyTicks('primary');
  const replicaTicks = valkeyTicks('replica');
  return {
    run,
    description,
    checksPerSecond: out.perSecond,
    latency: out.latency,
    ok: out.ok,
    denied: out.denied,
    degraded: out.degraded,
    errors: out.errors,
    firstError: out.firstError,
    tollgateCpuUsPerCheck: r1(us(s1.tollgate - s0.tollgate) / checks),
    tollgateCpuPercent: r1(((s1.tollgate - s0.tollgate) / CLK_TCK / secs) * 100),
    valkeyCpuUsPerCheck: r1(us(primaryTicks + replicaTicks) / checks),
    valkeyPrimaryCpuUsPerCheck: r1(us(primaryTicks) / checks),
    valkeyReplicaCpuUsPerCheck: r1(us(replicaTicks) / checks),
    scriptCallsPerCheck: Math.round((scripts / checks) * 100) / 100,
    commandsPerCheck: Math.round((commands / checks) * 100) / 100,
    valkeyCpuUsPerScriptCall: r1(us(primaryTicks) / Math.max(1, scripts)),
    primaries: rows,
    slotSpanningChecks: m1.spanning - m0.spanning,
    compensations: m1.compensations - m0.compensations,
    loadgenCpuPercent: cpuPercent,
    scriptClasses: [],
  };
}

/** Measure one run; its captured script calls wait for the next `probePending()`. */
export async function measure(
  run: RunName,
  description: string,
  backend: Backend,
  dir: string,
): Promise<RunRow> {
  console.error(`# ${run}: ${description}; ${WARMUP_MS / 1000} s warm-up + ${DURATION_MS / 1000} s`);
  // Same keys every run: start from an empty store (a FLUSHALL on each primary).
  for (const n of primariesOf(backend)) await backend.client(n.port).flushall();
  const tg = await startTollgate(run, dir, backend.url);
  let s0: Snapshot | undefined;
  let s1: Snapshot | undefined;
  const capture = await captureScripts(backend);
  let result: RunRow | undefined;
  let samples: Array<{ cls: string; c: Captured }> = [];
  let captured: Map<string, Captured> | undefined;
  try {
    const spec: LoadSpec = {
      port: tg.grpcPort,
      workload: 'small',
      mode: 'closed',
      durationMs: DURATION_MS,
      warmupMs: WARMUP_MS,
      concurrency: CONCURRENCY,
    };
    const load = await runChild<LoadResult>('loadgen.js', spec, (line) => {
      if (line === 'measuring') {
        captured = capture.stop(); // MONITOR costs the server: the warm-up only
        s0 = snapshot(tg, backend);
      } else if (line.startsWith('{') && s0) s1 = snapshot(tg, backend);
    });
    if (!s0 || !s1) throw new Error('the load generator never reported its measured window');
    const row = await runRow(run, description, backend, load, s0, s1);
    const total = [...(captured ?? new Map()).values()].reduce((n, c) => n + c.count, 0);
    samples = [...(captured ?? new Map<string, Captured>()).entries()].map(([cls, c]) => ({ cls, c }));
    row.scriptClasses = samples.map(({ cls, c }) => ({
      class: cls,
      share: Math.round((c.count / Math.max(1, total)) * 1000) / 1000,
    }));
    console.error(
      `#   ${row.checksPerSecond} checks/s p50 ${row.latency.p50} p99 ${row.latency.p99} ms; tollgate ${row.tollgateCpuUsPerCheck} µs/check (${row.tollgateCpuPercent}%); valkey ${row.valkeyCpuUsPerCheck} µs/check, ${row.scriptCallsPerCheck} scripts/check, ${row.valkeyCpuUsPerScriptCall} µs/script; degraded ${row.degraded} errors ${row.errors}`,
    );
    result = row;
  } finally {
    captured ??= capture.stop();
    await stopTollgate(tg);
  }
  if (!result) throw new Error('unreachable');
  addPending(result, samples, backend);
  return result;
}
