/**
 * Store-level benchmark against one valkey-server (its own process):
 *   - tollgate's check script through ValkeyStore (its one pipelined connection, EVALSHA), with
 *     the 3 limits of a small chat call and with 1 limit;
 *   - valkey-benchmark sending the same EVALSHA (3 keys) from 50 connections, one command at a time
 *     and 16 pipelined per connection (the server's ceiling for this script);
 *   - rate-limiter-flexible's RateLimiterRedis (a peer; 1 counter per call) on an iovalkey client.
 * Closed loop at fixed concurrency for a fixed time.
 * Usage: node dist/bench/store-bench.js '<json {port, durationMs, concurrency}>' → one JSON line.
 */
import { execFileSync } from 'node:child_process';
import { Valkey } from 'iovalkey';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { loadScript } from '../src/store/scripts.js';
import { type CheckPlan, EntryKind, planArgs } from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { type LatencySummary, summarize } from './loadgen.js';
import { TENANTS } from './workloads.js';

export interface StoreRow {
  name: string;
  opsPerSecond: number;
  latency?: LatencySummary;
  note?: string;
}

function plan(tenant: number, nLimits: number): CheckPlan {
  const names = ['tenant-requests', 'tenant-tokens', 'tenant-spend'];
  const keys = names.slice(0, nLimits).map((n, i) => `sb:${i === 2 ? 'c' : 'r'}:${n}:t${tenant}`);
  const entries = keys.map((_, i) => ({
    key: i,
    kind: i === 2 ? EntryKind.Calendar : EntryKind.Rolling,
    capacity: i === 0 ? 100_000_000 : 1_000_000_000_000,
    period: i === 2 ? 2 : 60_000,
    tzOffsetMin: 0,
    cost: i === 0 ? 1 : 600,
    shadow: false,
    downgradeAt: 0,
  }));
  return { keys, candidates: [entries] };
}

async function closedLoop(
  durationMs: number,
  concurrency: number,
  op: (i: number) => Promise<unknown>,
): Promise<{ ops: number; lat: number[] }> {
  const lat: number[] = [];
  let i = 0;
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      await op(i++);
      lat.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ops: lat.length, lat };
}

async function run(
  name: string,
  durationMs: number,
  concurrency: number,
  op: (i: number) => Promise<unknown>,
): Promise<StoreRow> {
  await closedLoop(Math.min(1000, durationMs / 3), concurrency, op); // warm-up
  const r = await closedLoop(durationMs, concurrency, op);
  return { name, opsPerSecond: Math.round(r.ops / (durationMs / 1000)), latency: summarize(r.lat) };
}

async function main(): Promise<void> {
  const { port, durationMs, concurrency } = JSON.parse(process.argv[2]) as {
    port: number;
    durationMs: number;
    concurrency: number;
  };
  const rows: StoreRow[] = [];
  const store = new ValkeyStore({ url: `valkey://127.0.0.1:${port}`, timeoutMs: 1000 });
  await store.connect();
  const plans3 = Array.from({ length: TENANTS }, (_, t) => plan(t, 3));
  const plans1 = Array.from({ length: TENANTS }, (_, t) => plan(t, 1));
  rows.push(
    await run('tollgate check script, 3 limits (ValkeyStore)', durationMs, concurrency, (i) =>
      store.check(plans3[i % TENANTS]),
    ),
  );
  rows.push(
    await run('tollgate check script, 1 limit (ValkeyStore)', durationMs, concurrency, (i) =>
      store.check(plans1[i % TENANTS]),
    ),
  );

  // valkey-benchmark: the same script by SHA, 3 keys, random tenant per call; 50 connections.
  const sha = loadScript('check-limits').sha;
  const p = plan(0, 3);
  const args = planArgs(p).map(String);
  const keys = p.keys.map((k) => k.replace('t0', 't__rand_int__'));
  const n = 200_000;
  for (const pipeline of [1, 16]) {
    const out = execFileSync(
      'valkey-benchmark',
      [
        '-p',
        String(port),
        '-c',
        '50',
        '-P',
        String(pipeline),
        '-n',
        String(n),
        '-r',
        String(TENANTS),
        '--csv',
        'EVALSHA',
        sha,
        '3',
        ...keys,
        ...args,
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    // --csv: header line, then "test","rps","avg_latency_ms","min","p50","p95","p99","max"
    const line = out.trim().split('\n').pop() ?? '';
    const cols = line.split(',').map((c) => c.replace(/"/g, ''));
    rows.push({
      name: `valkey-benchmark EVALSHA, 3 limits (50 connections${pipeline > 1 ? `, pipeline ${pipeline}` : ''})`,
      opsPerSecond: Math.round(Number(cols[1])),
      latency: {
        n,
        p50: Number(cols[4]),
        p99: Number(cols[6]),
        p999: Number.NaN,
        max: Number(cols[7]),
        mean: Number(cols[2]),
      },
      note: pipeline > 1 ? 'server ceiling for this script' : 'one command at a time per connection',
    });
  }

  // rate-limiter-flexible on the same server, on an iovalkey client with auto-pipelining (its usual setup).
  const client = new Valkey({ port, enableAutoPipelining: true });
  const rl = new RateLimiterRedis({
    storeClient: client,
    points: 100_000_000,
    duration: 60,
    keyPrefix: 'rlf',
  });
  rows.push(
    await run('rate-limiter-flexible RateLimiterRedis.consume, 1 counter', durationMs, concurrency, (i) =>
      rl.consume(`t${i % TENANTS}`, 1),
    ),
  );
  rows.push(
    await run('rate-limiter-flexible, 3 counters per call (3 × consume)', durationMs, concurrency, (i) =>
      Promise.all([
        rl.consume(`a${i % TENANTS}`, 1),
        rl.consume(`b${i % TENANTS}`, 600),
        rl.consume(`c${i % TENANTS}`, 600),
      ]),
    ),
  );
  client.disconnect();
  await store.close();
  process.stdout.write(`${JSON.stringify(rows)}\n`);
  process.exit(0);
}

if (process.argv[1]?.endsWith('store-bench.js')) void main();
