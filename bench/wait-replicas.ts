/**
 * The cost of store.wait_replicas: 1 (docs/high-availability.md). Starts its own primary and replica
 * (valkey-server, loopback, no persistence), then runs tollgate's check script through each client
 * (resp, iovalkey) with wait_replicas 0 and 1, interleaved (0, 1, 0, 1) so one run gives the ratio on the
 * same machine load: a closed loop at concurrency 1 (latency) and 32 (throughput), every check allowed
 * (so every one WAITs when on).
 * Usage: npm run build && node dist/bench/wait-replicas.js [durationMs=3000] [store timeout ms=25]
 * → JSON rows on stdout (errors: checks past the store timeout; waitShort: WAITs short of 1 replica).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import { IovalkeyStore } from '../src/store/iovalkey.js';
import { type CheckPlan, EntryKind } from '../src/store/types.js';
import { ValkeyStore, type ValkeyStoreOptions } from '../src/store/valkey.js';
import { summarize } from './loadgen.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function plan(i: number): CheckPlan {
  const keys = ['requests', 'tokens', 'spend'].map((n) => `wb:r:${n}:t${i % 1000}`);
  const entries = keys.map((_, k) => ({
    key: k,
    kind: EntryKind.Rolling,
    capacity: 1_000_000_000_000,
    period: 60_000,
    tzOffsetMin: 0,
    cost: k === 0 ? 1 : 600,
    shadow: false,
    downgradeAt: 0,
  }));
  return { keys, candidates: [entries] };
}

async function server(port: number, dir: string, extra: string[] = []): Promise<ChildProcess> {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
  ];
  const proc = spawn('valkey-server', [...args, ...extra], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    const c = new Valkey({ port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    c.on('error', () => {});
    try {
      await c.connect();
      const info = await c.info('replication');
      c.disconnect();
      if (extra.length === 0 || info.includes('master_link_status:up')) return proc;
    } catch {
      c.disconnect();
    }
    await sleep(50);
  }
  throw new Error(`valkey-server on ${port} not ready`);
}

async function run(store: ValkeyStore | IovalkeyStore, durationMs: number, concurrency: number) {
  await store.connect();
  const lat: number[] = [];
  let i = 0;
  let errors = 0;
  const end = performance.now() + durationMs;
  const worker = async () => {
    while (performance.now() < end) {
      const t = performance.now();
      await store.check(plan(i++)).catch(() => errors++);
      lat.push(performance.now() - t);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  await store.close();
  return { checksPerSecond: Math.round(lat.length / (durationMs / 1000)), errors, latency: summarize(lat) };
}

async function main(): Promise<void> {
  const durationMs = Number(process.argv[2] ?? 3000);
  const timeoutMs = Number(process.argv[3] ?? 25);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-wait-bench-'));
  const [pPort, rPort] = [16_379 + (process.pid % 1000), 17_379 + (process.pid % 1000)];
  const primary = await server(pPort, mkdtempSync(join(dir, 'p-')));
  const replica = await server(rPort, mkdtempSync(join(dir, 'r-')), [
    '--replicaof',
    '127.0.0.1',
    String(pPort),
  ]);
  const rows: unknown[] = [];
  try {
    for (const client of ['resp', 'iovalkey'] as const) {
      for (const concurrency of [1, 32]) {
        for (const waitReplicas of [0, 1, 0, 1]) {
          const opts: ValkeyStoreOptions = {
            url: `valkey://127.0.0.1:${pPort}`,
            timeoutMs,
            waitReplicas,
          };
          const store = client === 'resp' ? new ValkeyStore(opts) : new IovalkeyStore(opts);
          const r = await run(store, durationMs, concurrency);
          rows.push({ client, concurrency, waitReplicas, ...r, waitShort: store.waitShort });
        }
      }
    }
  } finally {
    primary.kill('SIGKILL');
    replica.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
  for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}

if (process.argv[1]?.endsWith('wait-replicas.js')) void main();
