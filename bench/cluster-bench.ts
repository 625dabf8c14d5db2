/**
 * tollgate on one standalone Valkey against tollgate on a 3-primary Valkey Cluster (issue #23).
 *
 * Spawns `node dist/src/cli.js serve` with bench/configs/bench.yaml (1,000 tenants, three limits keyed
 * per tenant) and drives it with the repo's load generator (bench/loadgen.ts, its own process): closed
 * loop, small chat workload, 64 in flight, BENCH_WARMUP_S (2) + BENCH_DURATION_S (8). Runs:
 *   standalone, client resp      one valkey-server, tollgate's own RESP client (the default)
 *   standalone, client iovalkey  the same server through iovalkey (the cluster client's library)
 *   cluster, shard_by tenant     3 primaries + 1 replica each (test/helpers/valkey-cluster.ts):
 *                                every key of a check in the tenant's slot, one script call
 *   cluster + global limit       the same plus one limit without `per`: every check spans two slots
 *                                (slot by slot: one check script per slot, then the record's write)
 * Per run: checks/s, p50/p99, tollgate CPU µs per check (/proc/<pid>/stat), Valkey CPU µs per check
 * summed over every server process (primaries and replicas, /proc/<pid>/stat of INFO's process_id),
 * script calls (INFO commandstats evalsha + eval + fcall) per primary per second and per check, Valkey
 * CPU µs per script call on the primaries, keys per primary (DBSIZE) and tenants per primary (the slot
 * of each tenant's hash tag), the slot-spanning and compensation counters from /metrics. Then the
 * capacity model (docs/cluster-capacity.md) from the Valkey-side cost.
 * Usage: npm run bench:cluster   Writes bench/results/cluster-bench.json.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Valkey } from 'iovalkey';
import { dump as yamlDump, load as yamlLoad } from 'js-yaml';
import { loadScript } from '../src/store/scripts.js';
import { keySlot } from '../src/store/slot.js';
import { freePort, startValkey, type TestValkey } from '../test/helpers/valkey.js';
import { startCluster, type TestCluster } from '../test/helpers/valkey-cluster.js';
import type { LatencySummary, LoadResult, LoadSpec } from './loadgen.js';
import { TENANTS } from './workloads.js';

const HERE = dirname(fileURLToPath(import.meta.url)); // dist/bench
const ROOT = resolve(HERE, '..', '..');
const CLK_TCK = 100;
const DURATION_MS = Number(process.env.BENCH_DURATION_S ?? 8) * 1000;
const WARMUP_MS = Number(process.env.BENCH_WARMUP_S ?? 2) * 1000;
const CONCURRENCY = 64;
const REPLICAS_PER_PRIMARY = 1;
/** Capacity model: plan every Valkey primary core and every tollgate core for this share of its CPU. */
const TARGET_UTILIZATION = 0.5;
const TARGETS = [100_000, 1_000_000];
/** As bench/run.ts and the container image. */
const NODE_FLAGS = ['--max-semi-space-size=8'];
/** Saturation probe: valkey-benchmark replays of each captured script call (50 connections, pipeline 16). */
const PROBE_CALLS = Number(process.env.BENCH_PROBE_CALLS ?? 40_000);
const PROBE_ROUNDS = 3;
const SCRIPT_NAMES = new Map(
  ['check-limits', 'reservation-put', 'settle-entries', 'queue-enqueue'].map((n) => [loadScript(n).sha, n]),
);
/** BENCH_RUNS=cluster,cluster-global: only these runs (a partial run writes no results file). */
const ONLY = process.env.BENCH_RUNS?.split(',');
const SCRIPT_COMMANDS = ['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'];

type RunName = 'standalone-resp' | 'standalone-iovalkey' | 'cluster' | 'cluster-global';

interface Backend {
  url: string;
  /** Every server process: port, pid, role. */
  nodes: Array<{ port: number; pid: number; role: 'primary' | 'replica' }>;
  client(port: number): Valkey;
  cluster?: TestCluster;
}

export interface PrimaryRow {
  port: number;
  scriptCallsPerSecond: number;
  commandsPerSecond: number;
  cpuPercent: number;
  keys: number;
  tenants: number;
  /** Commands in the measured window by name (those run inside scripts included). */
  commands: Record<string, number>;
}

/** One kind of script call tollgate sent in a run, captured with MONITOR during the warm-up. */
export interface ScriptClass {
  /** e.g. `check-limits, 4 keys` or `check-limits, 1 key (global)`. */
  class: string;
  /** Its share of the captured script calls. */
  share: number;
  /** valkey-benchmark replay of one captured call on the primary that owns its slot. */
  probe?: {
    calls: number;
    callsPerSecond: number;
    cpuUsPerCall: number;
    primaryCpuPercent: number;
    /** Every round's µs per call (cpuUsPerCall is their median round). */
    roundsCpuUsPerCall?: number[];
  };
}

export interface RunRow {
  run: RunName;
  description: string;
  checksPerSecond: number;
  latency: LatencySummary;
  ok: number;
  denied: number;
  degraded: number;
  errors: number;
  firstError?: string;
  tollgateCpuUsPerCheck: number;
  tollgateCpuPercent: number;
  /** Every Valkey process (primaries and replicas). */
  valkeyCpuUsPerCheck: number;
  valkeyPrimaryCpuUsPerCheck: number;
  valkeyReplicaCpuUsPerCheck: number;
  scriptCallsPerCheck: number;
  commandsPerCheck: number;
  /** Primary CPU over the script calls the primaries ran. */
  valkeyCpuUsPerScriptCall: number;
  primaries: PrimaryRow[];
  slotSpanningChecks: number;
  compensations: number;
  loadgenCpuPercent: number;
  scriptClasses: ScriptClass[];
  /** Σ share × probe µs × script calls per check: a saturated primary's CPU per check. */
  saturatedValkeyCpuUsPerCheck?: number;
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const r1 = (x: number) => Math.round(x * 10) / 10;

function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((res) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 2000 }, (r) => {
      let body = '';
      r.on('data', (d) => {
        body += d;
      });
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('error', () => res({ status: 0, body: '' }));
    req.on('timeout', () => {
      req.destroy();
      res({ status: 0, body: '' });
    });
    req.end();
  });
}

/** Sum of a counter's samples in a Prometheus text exposition (0 when absent). */
function counter(text: string, name: string): number {
  let n = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'gm'))) n += Number(m[1]);
  return n;
}

async function metrics(port: number): Promise<{ spanning: number; compensations: number }> {
  const { body } = await httpGet(port, '/metrics');
  return {
    spanning: counter(body, 'tollgate_store_slot_spanning_checks_total'),
    compensations: counter(body, 'tollgate_store_compensations_total'),
  };
}

/** bench/configs/bench.yaml with the run's store section (and the global limit). */
function configFor(run: RunName, dir: string): string {
  const cfg = yamlLoad(readFileSync(join(ROOT, 'bench', 'configs', 'bench.yaml'), 'utf8')) as any;
  // Cost per check is what is measured, not the latency objective: on two shared cores a check can
  // wait in tollgate's own backlog for hundreds of ms, and with bench.yaml's 50 ms deadline (150 ms
  // overload budget) it would be shed or answered degraded without reaching Valkey.
  cfg.server.decision_deadline = '2s';
  cfg.server.overload_budget = '10s';
  cfg.store.timeout = '1s';
  if (run === 'standalone-iovalkey') cfg.store.client = 'iovalkey';
  if (run === 'cluster' || run === 'cluster-global') {
    cfg.store.topology = 'cluster';
    cfg.store.shard_by = 'tenant';
  }
  // Last, so the reservation record stays in the tenant's slot (it follows the first limit).
  if (run === 'cluster-global')
    cfg.limits.push({ name: 'global-requests', requests: 1_000_000_000_000, every: '1m' });
  const file = join(dir, `${run}.yaml`);
  writeFileSync(file, yamlDump(cfg));
  return file;
}

async function startTollgate(config: string, valkeyUrl: string) {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const proc = spawn(process.execPath, [...NODE_FLAGS, join(ROOT, 'dist', 'src', 'cli.js'), 'serve'], {
    cwd: ROOT,
    env: {
      ...process.env,
      TOLLGATE_CONFIG: config,
      TOLLGATE_GRPC_PORT: String(grpcPort),
      TOLLGATE_HTTP_PORT: String(httpPort),
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
      MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2',
      MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? '131072',
      VALKEY_URL: valkeyUrl,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const deadline = performance.now() + 20_000;
  while ((await httpGet(httpPort, '/readyz')).status !== 200) {
    if (proc.exitCode !== null) throw new Error(`tollgate exited with ${proc.exitCode}`);
    if (performance.now() > deadline) throw new Error('tollgate not ready after 20 s');
    await sleep(20);
  }
  await sleep(300);
  return { proc, grpcPort, httpPort };
}

async function commandStats(c: Valkey): Promise<Record<string, number>> {
  const info = await c.info('commandstats');
  const calls: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1]] = Number(m[2]);
  return calls;
}

const scriptCalls = (c: Record<string, number>) => SCRIPT_COMMANDS.reduce((n, k) => n + (c[k] ?? 0), 0);
/** Commands tollgate sent (the bench's own INFO calls left out). */
const allCalls = (c: Record<string, number>) =>
  Object.entries(c).reduce((n, [k, v]) => (k === 'info' || k === 'config|resetstat' ? n : n + v), 0);

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) > 0) out[k] = v - (a[k] ?? 0);
  return out;
}

async function pidOf(c: Valkey): Promise<number> {
  const m = /^process_id:(\d+)/m.exec(await c.info('server'));
  if (!m) throw new Error('INFO server has no process_id');
  return Number(m[1]);
}

/** Primaries' ports with the number of tenants whose hash tag `{tenant-N}` falls in their slots. */
async function tenantsPerPrimary(b: Backend): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  if (!b.cluster) {
    out.set(b.nodes[0].port, TENANTS);
    return out;
  }
  const prims = await b.cluster.primaries();
  for (const p of prims) out.set(p.port, 0);
  for (let t = 0; t < TENANTS; t++) {
    const slot = keySlot(`{tenant-${t}}`);
    const owner = prims.find((p) => p.slots.some(([a, z]) => slot >= a && slot <= z));
    if (owner) out.set(owner.port, (out.get(owner.port) ?? 0) + 1);
  }
  return out;
}

interface Captured {
  port: number;
  argv: string[];
  count: number;
}

/** MONITOR quotes arguments C-style (iovalkey undoes only \\"). */
function unescapeMonitor(a: string): string {
  return a.replace(/\\(x[0-9a-fA-F]{2}|[nrtab\\])/g, (_m, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(Number.parseInt(e.slice(1), 16));
    return ({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b', '\\': '\\' } as Record<string, string>)[e];
  });
}

/** MONITOR every primary until `stop()`; script calls grouped by class, one sample call each. */
async function captureScripts(b: Backend) {
  const classes = new Map<string, Captured>();
  const mons: Array<{ disconnect(): void }> = [];
  for (const n of b.nodes.filter((x) => x.role === 'primary')) {
    const c = new Valkey({ port: n.port, lazyConnect: true });
    c.on('error', () => {});
    const m = await c.monitor();
    m.on('monitor', (_time: string, args: string[]) => {
      const cmd = String(args[0]).toLowerCase();
      // EVAL is the once-per-node NOSCRIPT fallback; the steady state is EVALSHA
      if (cmd !== 'evalsha') return;
      const name = SCRIPT_NAMES.get(String(args[1])) ?? String(args[1]).slice(0, 8);
      const nk = Number(args[2]);
      const keys = args.slice(3, 3 + nk);
      const global = Boolean(b.cluster) && keys.length > 0 && keys.every((k) => !k.includes('{'));
      const cls = `${name}, ${nk} key${nk === 1 ? '' : 's'}${global ? ' (global limit)' : ''}`;
      const got = classes.get(cls);
      if (got) got.count++;
      else classes.set(cls, { port: n.port, argv: args.map((a) => unescapeMonitor(String(a))), count: 1 });
    });
    mons.push(m, c);
  }
  return {
    stop: () => {
      for (const m of mons) m.disconnect();
      return classes;
    },
  };
}

/** Replay one captured call with valkey-benchmark on its primary: CPU µs per call at saturation. */
function probe(c: Captured, pid: number): NonNullable<ScriptClass['probe']> {
  const t0 = performance.now();
  const ticks0 = cpuTicks(pid);
  execFileSync(
    'valkey-benchmark',
    ['-p', String(c.port), '-c', '50', '-P', '16', '-n', String(PROBE_CALLS), '-q', ...c.argv],
    { encoding: 'utf8', timeout: 120_000 },
  );
  const ticks = cpuTicks(pid) - ticks0;
  const secs = (performance.now() - t0) / 1000;
  return {
    calls: PROBE_CALLS,
    callsPerSecond: Math.round(PROBE_CALLS / secs),
    cpuUsPerCall: r1(((ticks / CLK_TCK) * 1e6) / PROBE_CALLS),
    primaryCpuPercent: r1((ticks / CLK_TCK / secs) * 100),
  };
}

interface Snapshot {
  at: number;
  tollgate: number;
  valkey: Map<number, number>;
  stats: Promise<Map<number, Record<string, number>>>;
  metrics: Promise<{ spanning: number; compensations: number }>;
}

/** Runs whose captured script calls still need their saturation probe. */
const pending: Array<{ row: RunRow; samples: Array<{ cls: string; c: Captured }>; backend: Backend }> = [];

/**
 * Valkey's own cost per call, saturated. The per-call figures of a run, at a few hundred calls/s per
 * primary, carry each server's idle work (cron, cluster bus, replication) and one wake-up per call; a
 * busy primary reads many calls per wake-up. Every pending class is replayed PROBE_ROUNDS times,
 * interleaved (the machine's load drifts), and its median µs per call kept.
 */
function probePending(): void {
  const jobs = pending.flatMap((p) => p.samples.map((sm, i) => ({ p, i, c: sm.c })));
  const got = jobs.map(() => [] as Array<NonNullable<ScriptClass['probe']>>);
  for (let round = 0; round < PROBE_ROUNDS; round++)
    jobs.forEach((j, k) => {
      got[k].push(probe(j.c, j.p.backend.nodes.find((n) => n.port === j.c.port)!.pid));
    });
  jobs.forEach((j, k) => {
    const sorted = [...got[k]].sort((x, y) => x.cpuUsPerCall - y.cpuUsPerCall);
    const med = sorted[Math.floor(sorted.length / 2)];
    j.p.row.scriptClasses[j.i].probe = { ...med, roundsCpuUsPerCall: got[k].map((g) => g.cpuUsPerCall) };
  });
  for (const { row } of pending) {
    const perCall = row.scriptClasses.reduce((n, k) => n + k.share * (k.probe?.cpuUsPerCall ?? 0), 0);
    row.saturatedValkeyCpuUsPerCheck = r1(perCall * row.scriptCallsPerCheck);
    console.error(
      `# ${row.run} saturated: ${row.scriptClasses.map((k) => `${k.class} ×${k.share}: ${k.probe?.roundsCpuUsPerCall?.join('/')} µs/call (median ${k.probe?.cpuUsPerCall}; ${k.probe?.callsPerSecond}/s)`).join('; ')}`,
    );
  }
  pending.length = 0;
}

async function measure(run: RunName, description: string, backend: Backend, dir: string): Promise<RunRow> {
  console.error(`# ${run}: ${description}; ${WARMUP_MS / 1000} s warm-up + ${DURATION_MS / 1000} s`);
  // Same keys every run: start from an empty store (a FLUSHALL on each primary).
  for (const n of backend.nodes) if (n.role === 'primary') await backend.client(n.port).flushall();
  const tg = await startTollgate(configFor(run, dir), backend.url);
  const primaries = backend.nodes.filter((n) => n.role === 'primary');
  const snap = (): Snapshot => {
    const at = performance.now();
    const tollgate = cpuTicks(tg.proc.pid!);
    const valkey = new Map(backend.nodes.map((n) => [n.port, cpuTicks(n.pid)]));
    const stats = (async () => {
      const m = new Map<number, Record<string, number>>();
      for (const p of primaries) m.set(p.port, await commandStats(backend.client(p.port)));
      return m;
    })();
    return { at, tollgate, valkey, stats, metrics: metrics(tg.httpPort) };
  };
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
    const { out, cpuPercent } = await runLoadgen(spec, (line) => {
      if (line === 'measuring') {
        captured = capture.stop(); // MONITOR costs the server: the warm-up only
        s0 = snap();
      } else if (line.startsWith('{') && s0) s1 = snap();
    });
    if (!s0 || !s1) throw new Error('the load generator never reported its measured window');
    const secs = (s1.at - s0.at) / 1000;
    const us = (ticks: number) => (ticks / CLK_TCK) * 1e6;
    const checks = Math.max(1, out.calls);
    const [st0, st1, m0, m1] = await Promise.all([s0.stats, s1.stats, s0.metrics, s1.metrics]);
    const valkeyTicks = (role: 'primary' | 'replica') =>
      backend.nodes
        .filter((n) => n.role === role)
        .reduce((t, n) => t + s1!.valkey.get(n.port)! - s0!.valkey.get(n.port)!, 0);
    const keys = new Map<number, number>();
    for (const p of primaries) keys.set(p.port, Number(await backend.client(p.port).dbsize()));
    const tenants = await tenantsPerPrimary(backend);
    let scripts = 0;
    let commands = 0;
    const perPrimary: PrimaryRow[] = primaries.map((p) => {
      const sc = scriptCalls(st1.get(p.port)!) - scriptCalls(st0.get(p.port)!);
      const all = allCalls(st1.get(p.port)!) - allCalls(st0.get(p.port)!);
      scripts += sc;
      commands += all;
      const ticks = s1!.valkey.get(p.port)! - s0!.valkey.get(p.port)!;
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
    const primaryTicks = valkeyTicks('primary');
    const replicaTicks = valkeyTicks('replica');
    const row: RunRow = {
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
      primaries: perPrimary,
      slotSpanningChecks: m1.spanning - m0.spanning,
      compensations: m1.compensations - m0.compensations,
      loadgenCpuPercent: cpuPercent,
      scriptClasses: [],
    };
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
    const exited = new Promise((r) => tg.proc.once('exit', r));
    tg.proc.kill('SIGTERM');
    const t = setTimeout(() => tg.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  if (!result) throw new Error('unreachable');
  pending.push({ row: result, samples, backend });
  return result;
}

/** The load generator in its own process (as bench/run.ts runs it); `onLine` sees every stdout line. */
function runLoadgen(
  spec: LoadSpec,
  onLine: (line: string) => void,
): Promise<{ out: LoadResult; cpuPercent: number }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const p: ChildProcess = spawn(process.execPath, [join(HERE, 'loadgen.js'), JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    let ticks = 0;
    const timer = setInterval(() => {
      try {
        ticks = cpuTicks(p.pid!);
      } catch {}
    }, 200);
    let seen = 0;
    p.stdout!.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n', seen); nl >= 0; nl = buf.indexOf('\n', seen)) {
        onLine(buf.slice(seen, nl));
        seen = nl + 1;
      }
    });
    p.on('close', (code) => {
      clearInterval(timer);
      if (code !== 0) return rej(new Error(`loadgen exited with ${code}`));
      const last = buf.trim().split('\n').pop() ?? '';
      const secs = (performance.now() - t0) / 1000;
      res({ out: JSON.parse(last), cpuPercent: r1((ticks / CLK_TCK / secs) * 100) });
    });
  });
}

async function standaloneBackend(v: TestValkey): Promise<Backend> {
  return {
    url: v.url,
    nodes: [{ port: v.port, pid: await pidOf(v.client), role: 'primary' }],
    client: () => v.client,
  };
}

async function clusterBackend(cl: TestCluster): Promise<Backend> {
  const nodes = await cl.nodes();
  const out: Backend['nodes'] = [];
  for (const n of nodes) out.push({ port: n.port, pid: await pidOf(cl.client(n.port)), role: n.role });
  return { url: cl.url, nodes: out, client: (port) => cl.client(port), cluster: cl };
}

export interface CapacityLayout {
  layout: string;
  /** Script calls per check on the primaries (INFO commandstats, measured window). */
  scriptCallsPerCheck: number;
  /** Per class of script call: its calls per check and a saturated primary's CPU µs per call. */
  calls: Array<{ class: string; perCheck: number; cpuUsPerCall: number }>;
  /** Σ calls per check × µs per call: a saturated primary's CPU per check. */
  valkeyCpuUsPerCheck: number;
  /** Checks/s one primary core sustains at 100% (1e6 / µs per check). */
  checksPerPrimaryAt100: number;
  /** The same at TARGET_UTILIZATION. */
  checksPerPrimaryPlanned: number;
  /** Hot slot (the global limit's key): every check runs one call there; its primary's ceiling. */
  hotSlot?: { cpuUsPerCall: number; ceilingAt100: number; ceilingPlanned: number };
  /**
   * Primaries for each target: the planned checks per primary; with a hot slot, also at least as many
   * primaries as shards of the global limit (per model or region) that the target needs, each on its own.
   */
  primariesNeeded: Record<string, number>;
  globalShardsNeeded?: Record<string, number>;
}

/** The capacity model from the Valkey-side cost (on this machine tollgate is the bottleneck). */
export function capacityModel(cluster: RunRow, global: RunRow) {
  const layouts: CapacityLayout[] = [];
  for (const [layout, r] of [
    ['single slot (shard_by tenant, every limit per tenant)', cluster],
    ['slot-spanning (+ one global limit)', global],
  ] as const) {
    const calls = r.scriptClasses.map((k) => ({
      class: k.class,
      perCheck: Math.round(k.share * r.scriptCallsPerCheck * 100) / 100,
      cpuUsPerCall: k.probe?.cpuUsPerCall ?? 0,
    }));
    const usPerCheck = calls.reduce((n, c) => n + c.perCheck * c.cpuUsPerCall, 0);
    const at100 = 1e6 / usPerCheck;
    const planned = at100 * TARGET_UTILIZATION;
    const hot = calls.find((c) => c.class.includes('(global limit)'));
    const l: CapacityLayout = {
      layout,
      scriptCallsPerCheck: r.scriptCallsPerCheck,
      calls,
      valkeyCpuUsPerCheck: r1(usPerCheck),
      checksPerPrimaryAt100: Math.round(at100),
      checksPerPrimaryPlanned: Math.round(planned),
      primariesNeeded: {},
    };
    if (hot) {
      const ceiling = 1e6 / (hot.cpuUsPerCall * hot.perCheck);
      l.hotSlot = {
        cpuUsPerCall: hot.cpuUsPerCall,
        ceilingAt100: Math.round(ceiling),
        ceilingPlanned: Math.round(ceiling * TARGET_UTILIZATION),
      };
      l.globalShardsNeeded = Object.fromEntries(
        TARGETS.map((t) => [String(t), Math.ceil(t / (ceiling * TARGET_UTILIZATION))]),
      );
    }
    for (const t of TARGETS) {
      const byCpu = Math.ceil(t / planned);
      l.primariesNeeded[String(t)] = Math.max(3, byCpu, l.globalShardsNeeded?.[String(t)] ?? 0);
    }
    layouts.push(l);
  }
  const tgAt100 = 1e6 / cluster.tollgateCpuUsPerCheck;
  const tollgate = {
    cpuUsPerCheck: cluster.tollgateCpuUsPerCheck,
    checksPerCoreAt100: Math.round(tgAt100),
    checksPerCorePlanned: Math.round(tgAt100 * TARGET_UTILIZATION),
    /** One core per replica. */
    replicasNeeded: Object.fromEntries(
      TARGETS.map((t) => [String(t), Math.ceil(t / (tgAt100 * TARGET_UTILIZATION))]),
    ),
  };
  return { targetUtilization: TARGET_UTILIZATION, layouts, tollgate };
}

async function main() {
  const uptimeBefore = execFileSync('uptime', { encoding: 'utf8' }).trim();
  console.error(`# ${uptimeBefore}`);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-bench-'));
  const rows: RunRow[] = [];
  let solo: TestValkey | undefined;
  let cl: TestCluster | undefined;
  try {
    const want = (r: RunName) => !ONLY || ONLY.includes(r);
    if (want('standalone-resp') || want('standalone-iovalkey')) {
      solo = await startValkey(['--save', '']); // extra args: always a private server
      const sb = await standaloneBackend(solo);
      if (want('standalone-resp'))
        rows.push(await measure('standalone-resp', 'one valkey-server, client resp (default)', sb, dir));
      if (want('standalone-iovalkey'))
        rows.push(await measure('standalone-iovalkey', 'one valkey-server, client iovalkey', sb, dir));
      probePending();
      await solo.close();
      solo = undefined;
    }
    if (want('cluster') || want('cluster-global')) {
      cl = await startCluster({ primaries: 3, replicasPer: REPLICAS_PER_PRIMARY });
      const cb = await clusterBackend(cl);
      const topo = `3 primaries + ${REPLICAS_PER_PRIMARY} replica each`;
      if (want('cluster')) rows.push(await measure('cluster', `${topo}, shard_by tenant`, cb, dir));
      if (want('cluster-global'))
        rows.push(await measure('cluster-global', `${topo}, shard_by tenant + one global limit`, cb, dir));
      probePending();
    }
  } finally {
    await solo?.close();
    await cl?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  const uptimeAfter = execFileSync('uptime', { encoding: 'utf8' }).trim();
  if (ONLY) {
    console.log(JSON.stringify(rows, null, 2));
    return;
  }
  const model = capacityModel(rows[2], rows[3]);

  console.table(
    rows.map((r) => ({
      run: r.run,
      'checks/s': r.checksPerSecond,
      'p50 ms': r.latency.p50,
      'p99 ms': r.latency.p99,
      'tollgate µs/check': r.tollgateCpuUsPerCheck,
      'valkey µs/check': `${r.valkeyCpuUsPerCheck} (${r.valkeyPrimaryCpuUsPerCheck} primaries)`,
      'scripts/check': r.scriptCallsPerCheck,
      'µs/script': r.valkeyCpuUsPerScriptCall,
      'saturated µs/check': r.saturatedValkeyCpuUsPerCheck ?? '-',
      'scripts/s per primary': r.primaries.map((p) => p.scriptCallsPerSecond).join(' / '),
      'degraded/errors': `${r.degraded}/${r.errors}`,
    })),
  );
  console.table(
    rows
      .filter((r) => r.primaries.length > 1)
      .flatMap((r) =>
        r.primaries.map((p) => ({
          run: r.run,
          primary: p.port,
          'scripts/s': p.scriptCallsPerSecond,
          'commands/s': p.commandsPerSecond,
          'CPU %': p.cpuPercent,
          keys: p.keys,
          tenants: p.tenants,
        })),
      ),
  );
  console.table(
    model.layouts.map((l) => ({
      layout: l.layout,
      calls: l.calls.map((c) => `${c.perCheck}× ${c.class} @ ${c.cpuUsPerCall} µs`).join('; '),
      'µs/check': l.valkeyCpuUsPerCheck,
      'checks/s per primary @100%': l.checksPerPrimaryAt100,
      [`@${TARGET_UTILIZATION * 100}%`]: l.checksPerPrimaryPlanned,
      'hot slot ceiling @100%/planned': l.hotSlot
        ? `${l.hotSlot.ceilingAt100}/${l.hotSlot.ceilingPlanned}`
        : '-',
      'primaries 100k': l.primariesNeeded['100000'],
      'primaries 1M': l.primariesNeeded['1000000'],
    })),
  );
  console.log('tollgate:', model.tollgate);

  const out = {
    date: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model,
      node: process.version,
      valkey: execFileSync('valkey-server', ['--version'], { encoding: 'utf8' }).trim(),
      uptimeBefore,
      uptimeAfter,
      loadavgAfter: loadavg(),
    },
    workload: {
      config: 'bench/configs/bench.yaml (1,000 tenants, 3 limits per tenant)',
      load: 'bench/loadgen.ts closed loop, small chat workload',
      concurrency: CONCURRENCY,
      warmupMs: WARMUP_MS,
      measureMs: DURATION_MS,
      cluster: `3 primaries, ${REPLICAS_PER_PRIMARY} replica each, 127.0.0.1`,
    },
    rows,
    capacity: model,
  };
  const file = join(ROOT, 'bench', 'results', 'cluster-bench.json');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.error(`# wrote ${file}`);
}

await main();
process.exit(0);
