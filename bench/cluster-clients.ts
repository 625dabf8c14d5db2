/**
 * Cluster client measurement for store.topology: cluster. Starts its own 3-primary + 3-replica Valkey
 * Cluster (test/helpers/valkey-cluster.ts, the one cluster starter) and one standalone valkey-server, and
 * runs the same token-bucket-like Lua script (HGET/HSET on 3 keys sharing a `{tN}` hash tag, 1000 tenants
 * spread over the slots) through each candidate client, closed loop at concurrency 64:
 *   a. iovalkey Cluster, enableAutoPipelining: true
 *   b. iovalkey Cluster, no auto-pipelining
 *   c. @valkey/valkey-glide GlideClusterClient, loaded from GLIDE_DIR (not a dependency; skipped without it)
 *   baseline: iovalkey Valkey (standalone), auto-pipelining.
 * Per client: 2 s warm-up, then 8 s measured: ops/s, p50/p99 latency, CPU µs per op of this process
 * (process.cpuUsage(): every thread, so glide's Rust core counts), EVALSHA calls per primary (INFO
 * commandstats). Then, for each cluster client, the same load while valkey-cli reshards 200 slots between
 * two primaries: commands that failed, by error.
 * Usage: npm run bench:cluster-clients   (GLIDE_DIR=/tmp/glide to include glide; BENCH_SECONDS=8)
 * Writes bench/results/cluster-clients.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Cluster, Valkey } from 'iovalkey';
import { startValkey } from '../test/helpers/valkey.js';
import { startCluster, type TestCluster } from '../test/helpers/valkey-cluster.js';
import { type LatencySummary, summarize } from './loadgen.js';

const LUA = `local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local cap = 1000000000
local ok = 1
for i = 1, #KEYS do
  local t = tonumber(redis.call('HGET', KEYS[i], 't')) or cap
  local ts = tonumber(redis.call('HGET', KEYS[i], 'ts')) or now
  t = math.min(cap, t + (now - ts))
  if t >= cost then t = t - cost else ok = 0 end
  redis.call('HSET', KEYS[i], 't', t, 'ts', now)
end
return ok`;

const TENANTS = 1000;
const CONCURRENCY = 64;
const WARMUP_MS = 2000;
const MEASURE_MS = Number(process.env.BENCH_SECONDS ?? 8) * 1000;
const RESHARD_SLOTS = 200;

/** One call of the script for tenant t: 3 keys in one slot. */
type Op = (keys: string[], now: number, cost: number) => Promise<unknown>;

interface Candidate {
  name: string;
  cluster: boolean;
  connect(): Promise<{ op: Op; close(): Promise<void> }>;
}

export interface Row {
  client: string;
  opsPerSecond: number;
  latency: LatencySummary;
  cpuUsPerOp: number;
  errors: number;
  firstError?: string;
  /** EVALSHA (+EVAL) calls per primary port in the measured window, as a share of the total. */
  perPrimary?: Record<string, number>;
}

export interface ReshardRow {
  client: string;
  slots: number;
  reshardMs: number;
  ops: number;
  errors: number;
  errorsByKind: Record<string, number>;
  p99: number;
  max: number;
}

const keysOf = (t: number) => [`tb:{t${t}}:req`, `tb:{t${t}}:tok`, `tb:{t${t}}:spend`];
const KEYS = Array.from({ length: TENANTS }, (_, t) => keysOf(t));

async function closedLoop(op: Op, ms: number, record: boolean) {
  const lat: number[] = [];
  const errors: string[] = [];
  let i = 0;
  let ops = 0;
  const end = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < end) {
      const keys = KEYS[(i++ * 7919) % TENANTS];
      const t = performance.now();
      try {
        await op(keys, Date.now(), 1);
        ops++;
        if (record) lat.push(performance.now() - t);
      } catch (e) {
        errors.push(String((e as Error).message ?? e));
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { ops, lat, errors };
}

const errorKind = (m: string) =>
  m
    .replace(/\d+\.\d+\.\d+\.\d+:\d+/g, 'ADDR')
    .replace(/\b\d+\b/g, 'N')
    .slice(0, 90);

/** An iovalkey client running the bucket script as a defined command (EVALSHA, EVAL on NOSCRIPT). */
function iovalkeyCandidate(name: string, cluster: boolean, open: () => Cluster | Valkey): Candidate {
  return {
    name,
    cluster,
    connect: async () => {
      const c = open();
      c.on('error', () => {});
      c.defineCommand('bucket', { numberOfKeys: 3, lua: LUA });
      await c.ping();
      const run = (c as any).bucket.bind(c) as (...a: unknown[]) => Promise<unknown>;
      return {
        op: (keys, now, cost) => run(keys[0], keys[1], keys[2], now, cost),
        close: async () => {
          c.disconnect();
        },
      };
    },
  };
}

// defineCommand puts the keys first, so auto-pipelining groups by the key's slot; a raw
// call('EVALSHA', sha, …) would be grouped by the SHA's slot (see the docs).
const iovalkeyCluster = (seeds: Array<{ host: string; port: number }>, autoPipelining: boolean) =>
  iovalkeyCandidate(
    `iovalkey Cluster${autoPipelining ? ' + autoPipelining' : ''}`,
    true,
    () => new Cluster(seeds, { enableAutoPipelining: autoPipelining }),
  );

const iovalkeyStandalone = (port: number) =>
  iovalkeyCandidate(
    'baseline: iovalkey Valkey (standalone) + autoPipelining',
    false,
    () => new Valkey({ port, enableAutoPipelining: true }),
  );

async function glideCandidate(seeds: Array<{ host: string; port: number }>): Promise<Candidate | string> {
  const dir = process.env.GLIDE_DIR;
  if (!dir)
    return 'GLIDE_DIR unset: @valkey/valkey-glide skipped (npm i @valkey/valkey-glide@2.5.2 in a dir of its own)';
  const entry = createRequire(join(dir, 'noop.js')).resolve('@valkey/valkey-glide');
  const mod: any = await import(pathToFileURL(entry).href);
  const glide = mod.GlideClusterClient ? mod : mod.default;
  const version = createRequire(entry)('../package.json').version as string;
  // Its Rust core logs every MOVED it follows at WARN; the reshard table counts what reaches the caller.
  glide.Logger.setLoggerConfig('error');
  return {
    name: `valkey-glide ${version} GlideClusterClient`,
    cluster: true,
    connect: async () => {
      const c = await glide.GlideClusterClient.createClient({ addresses: seeds, requestTimeout: 2000 });
      const script = new glide.Script(LUA);
      return {
        op: (keys, now, cost) => c.invokeScript(script, { keys, args: [String(now), String(cost)] }),
        close: async () => {
          c.close();
          script.release();
        },
      };
    },
  };
}

async function evalCalls(cl: TestCluster): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const n of await cl.commandCalls()) out[n.port] = (n.calls.evalsha ?? 0) + (n.calls.eval ?? 0);
  return out;
}

async function measure(c: Candidate, cl: TestCluster | undefined): Promise<Row> {
  const { op, close } = await c.connect();
  try {
    await closedLoop(op, WARMUP_MS, false);
    if (c.cluster) await cl!.resetStats();
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await closedLoop(op, MEASURE_MS, true);
    const secs = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const row: Row = {
      client: c.name,
      opsPerSecond: Math.round(r.ops / secs),
      latency: summarize(r.lat),
      cpuUsPerOp: Math.round(((cpu.user + cpu.system) / Math.max(1, r.ops)) * 10) / 10,
      errors: r.errors.length,
      firstError: r.errors[0],
    };
    if (c.cluster) {
      const calls = await evalCalls(cl!);
      const total = Object.values(calls).reduce((a, b) => a + b, 0);
      row.perPrimary = Object.fromEntries(
        Object.entries(calls).map(([p, n]) => [p, Math.round((n / Math.max(1, total)) * 1000) / 1000]),
      );
    }
    return row;
  } finally {
    await close();
  }
}

async function underReshard(c: Candidate, cl: TestCluster, forward: boolean): Promise<ReshardRow> {
  const { op, close } = await c.connect();
  try {
    await closedLoop(op, 500, false);
    const [a, b] = await cl.primaries();
    const [from, to] = forward ? [a, b] : [b, a];
    const { done } = cl.startReshard({ from: from.id, to: to.id, slots: RESHARD_SLOTS });
    let stop = false;
    let reshardMs = 0;
    const finished = done.then((r) => {
      reshardMs = r.ms;
      stop = true;
    });
    const lat: number[] = [];
    const errors: string[] = [];
    let ops = 0;
    let i = 0;
    const worker = async () => {
      while (!stop) {
        const keys = KEYS[(i++ * 7919) % TENANTS];
        const t = performance.now();
        try {
          await op(keys, Date.now(), 1);
          ops++;
          lat.push(performance.now() - t);
        } catch (e) {
          errors.push(String((e as Error).message ?? e));
        }
      }
    };
    await Promise.all([...Array.from({ length: CONCURRENCY }, worker), finished]);
    const byKind: Record<string, number> = {};
    for (const e of errors) byKind[errorKind(e)] = (byKind[errorKind(e)] ?? 0) + 1;
    const s = summarize(lat);
    return {
      client: c.name,
      slots: RESHARD_SLOTS,
      reshardMs,
      ops,
      errors: errors.length,
      errorsByKind: byKind,
      p99: s.p99,
      max: s.max,
    };
  } finally {
    await close();
  }
}

/** auto-pipelining + a raw call('EVALSHA', sha, …): batches grouped by the SHA's slot, not the key's. */
async function rawEvalshaProbe(seeds: Array<{ host: string; port: number }>, sha: string) {
  const c = new Cluster(seeds, { enableAutoPipelining: true });
  c.on('error', () => {});
  await c.ping();
  const r = await closedLoop((keys, now, cost) => c.call('EVALSHA', sha, 3, ...keys, now, cost), 1000, false);
  c.disconnect();
  return { ops: r.ops, errors: r.errors.length, firstError: r.errors[0] };
}

async function main() {
  const uptimeBefore = execFileSync('uptime', { encoding: 'utf8' }).trim();
  console.error(`# ${uptimeBefore}`);
  const cl = await startCluster({ primaries: 3, replicasPer: 1 });
  const solo = await startValkey(['--save', '']); // extra args: always a private server, never VALKEY_URL
  const rows: Row[] = [];
  const reshards: ReshardRow[] = [];
  const notes: string[] = [];
  try {
    const seeds = (await cl.primaries()).map((n) => ({ host: '127.0.0.1', port: n.port }));
    let sha = '';
    for (const port of cl.ports) sha = String(await cl.client(port).script('LOAD', LUA));
    const candidates: Candidate[] = [iovalkeyCluster(seeds, true), iovalkeyCluster(seeds, false)];
    const g = await glideCandidate(seeds);
    if (typeof g === 'string') {
      console.error(`# ${g}`);
      notes.push(g);
    } else candidates.push(g);
    candidates.push(iovalkeyStandalone(solo.port));

    for (const c of candidates) {
      console.error(`# ${c.name}: ${WARMUP_MS / 1000} s warm-up + ${MEASURE_MS / 1000} s`);
      rows.push(await measure(c, cl));
    }
    const keysPerNode = await cl.keysPerNode();
    let forward = true;
    for (const c of candidates.filter((x) => x.cluster)) {
      console.error(`# ${c.name}: under a ${RESHARD_SLOTS}-slot reshard`);
      reshards.push(await underReshard(c, cl, forward));
      forward = !forward;
    }
    const probe = await rawEvalshaProbe(seeds, sha);

    console.table(
      rows.map((r) => ({
        client: r.client,
        'ops/s': r.opsPerSecond,
        'p50 ms': r.latency.p50,
        'p99 ms': r.latency.p99,
        'CPU µs/op': r.cpuUsPerOp,
        errors: r.errors,
        'share per primary': r.perPrimary ? Object.values(r.perPrimary).join(' / ') : '-',
      })),
    );
    console.table(
      reshards.map((r) => ({
        client: r.client,
        'reshard ms': r.reshardMs,
        ops: r.ops,
        failed: r.errors,
        'p99 ms': r.p99,
        'max ms': r.max,
        errors: Object.entries(r.errorsByKind)
          .map(([k, n]) => `${n}× ${k}`)
          .join('; '),
      })),
    );
    console.log('keys per primary:', keysPerNode.map((n) => `${n.port}: ${n.keys}`).join(', '));
    console.log('autoPipelining + raw call(EVALSHA) probe, 1 s:', probe);

    const out = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, loadavgAfter: loadavg(), uptimeBefore, node: process.version },
      valkey: execFileSync('valkey-server', ['--version'], { encoding: 'utf8' }).trim(),
      workload: {
        script: 'HGET×2 + HSET on 3 keys sharing one {tN} hash tag',
        tenants: TENANTS,
        concurrency: CONCURRENCY,
        warmupMs: WARMUP_MS,
        measureMs: MEASURE_MS,
        topology: '3 primaries + 3 replicas on 127.0.0.1; standalone baseline: 1 server',
      },
      rows,
      reshards,
      keysPerNode,
      rawEvalshaProbe: probe,
      notes,
    };
    const file = join(
      dirname(fileURLToPath(import.meta.url)),
      '..',
      '..',
      'bench',
      'results',
      'cluster-clients.json',
    );
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
    console.error(`# wrote ${file}`);
  } finally {
    await solo.close();
    await cl.stop();
  }
}

await main();
process.exit(0);
