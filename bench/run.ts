/**
 * `npm run bench`: tollgate (in-memory store, and a real valkey-server it starts) against a null
 * ext_authz server, in one run on this machine. Each server and the load generator are separate
 * processes; CPU and RSS are read from /proc/<pid>. Prints a table with ratios to the null server
 * and writes bench/results/latest.json (BENCH_OUT to write elsewhere too).
 *
 * Env: BENCH_DURATION_S (8) per measured run, BENCH_WARMUP_S (2) before a closed loop,
 *      BENCH_OPEN_WARMUP_S (3) before an open loop (its first half ramps the rate up), BENCH_CONCURRENCY (64),
 *      BENCH_WORKLOADS (small,mix,deny,settle,agent,rag,medium: the big-prompt ones last, their open
 *      loops can overload tollgate and the heap it grows stays resident for later workloads), BENCH_SOAK=1 (5-minute soak, BENCH_SOAK_S to change,
 *      BENCH_SOAK_RATE for its open-loop rate, default 500/s),
 *      BENCH_SKIP_STORE=1 (no store-level run), BENCH_SKIP_TOKENIZERS=1 (no token counter comparison).
 *
 * Rounds. This machine's speed drifts from one minute to the next (other tenants): in one run the
 * null server's three closed-loop rounds read 2,501, 4,186 and 2,598 checks/s. So a ratio is
 * only taken between servers measured side by side: rounds run interleaved null → memory → valkey,
 * each round's tollgate figure is divided by the null server's figure of the same round, and the
 * median of those per-round ratios is the result (one burst of outside load then moves one round,
 * not the verdict). Every round is kept in the JSON and printed.
 *      BENCH_ROUNDS (3): closed-loop rounds of the small workload (its throughput is a target; the
 *      null server's median round is the "measured maximum" that sets the open-loop rate) and of
 *      settle (its CPU per call is a target). The other workloads run one closed-loop round.
 *      BENCH_OPEN_ROUNDS (3): open-loop rounds of the small and mix workloads (p99 targets); deny and
 *      medium run one; settle runs no open loop.
 *
 * settle: each call is a Check plus its ext_proc stream (bench/settle-stream.ts). At the end each
 * tollgate's tollgate_settlements_total is read from /metrics: a run in which they did not settle
 * (about one settlement per settle call) fails, and the bench exits non-zero.
 */
import { rmSync } from 'node:fs';
import { load, type RunRow, runSoak } from './measure.js';
import { runChild, type Server, type ServerName, startServer, startValkey } from './procs.js';
import { buildReport, machineInfo, writeReport } from './report.js';
import { medianClosedRows, medianOpenRows } from './rounds.js';
import {
  CLOSED_ONLY,
  CLOSED_ROUNDS_FOR,
  env,
  OPEN_ROUNDS,
  OPEN_ROUNDS_FOR,
  ROUNDS,
  WORKLOADS,
} from './settings.js';
import { assertSettled, readSettlements } from './settle-checks.js';
import type { StoreRow } from './store-bench.js';
import { printTable } from './table.js';
import { runTokenizerBench, type TokenizerRow } from './tokenizer-bench.js';
import { summarize } from './verdicts.js';
import type { WorkloadName } from './workloads.js';

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  console.error(`machine: ${machine.nproc} cores, ${machine.cpu_model}, node ${machine.node}`);
  const vk = await startValkey();
  const servers: Server[] = [];
  const cleanup = () => {
    for (const s of servers) s.proc.kill('SIGKILL');
    vk.proc.kill('SIGKILL');
    rmSync(vk.dir, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  try {
    // Start-up is measured one server at a time on an idle machine.
    for (const [name, url] of [
      ['null', undefined],
      ['memory', undefined],
      ['valkey', `valkey://127.0.0.1:${vk.port}`],
    ] as const) {
      const s = await startServer(name, url);
      servers.push(s);
      console.error(`  started ${name}: ${s.startupMs} ms to ready, idle RSS ${s.idleRssMb} MB`);
    }
    const byName = (n: ServerName) => servers.find((s) => s.name === n)!;
    const { rows, all, rates } = await runWorkloads(servers, vk.proc.pid);
    const settlements = WORKLOADS.includes('settle') ? await readSettlements(servers) : undefined;

    let soak: unknown;
    // A soak is about growth over time, so it runs at a rate tollgate sustains (BENCH_SOAK_RATE, default
    // 500/s), not at the null server's half maximum (an overloaded open loop only measures its backlog).
    if (env.BENCH_SOAK === '1') soak = await runSoak(byName('valkey'), Number(env.BENCH_SOAK_RATE ?? 500));

    let store: StoreRow[] | undefined;
    if (env.BENCH_SKIP_STORE !== '1') {
      console.error('  store-level run …');
      store = (
        await runChild<StoreRow[]>('store-bench.js', { port: vk.port, durationMs: 5000, concurrency: 64 })
      ).out;
    }

    // Token counters side by side (each in its own process; no server running meanwhile).
    let tokenizers: TokenizerRow[] | undefined;
    if (env.BENCH_SKIP_TOKENIZERS !== '1') {
      console.error('  tokenizer comparison …');
      tokenizers = runTokenizerBench();
    }

    const summary = summarize(rows, all, servers, settlements);
    const report = buildReport({
      started,
      machine,
      servers,
      rates,
      summary,
      rows,
      all,
      store,
      tokenizers,
      soak,
      settlements,
    });
    printTable(report);
    writeReport(report);
    if (settlements) assertSettled(settlements);
  } finally {
    // With BENCH_NODE_FLAGS (e.g. --cpu-prof) the servers stop cleanly first, so they write their files.
    if (env.BENCH_NODE_FLAGS) await stopGently(servers);
    cleanup();
    process.removeListener('exit', cleanup);
  }
}

/** SIGTERM each server and wait (up to 10 s) for it to exit. */
async function stopGently(servers: Server[]): Promise<void> {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((done) => {
          if (s.proc.exitCode !== null) return done();
          const t = setTimeout(done, 10_000);
          s.proc.once('exit', () => {
            clearTimeout(t);
            done();
          });
          s.proc.kill('SIGTERM');
        }),
    ),
  );
}

/**
 * Every workload of BENCH_WORKLOADS against every server: closed-loop rounds, then open-loop rounds at
 * half the null server's measured maximum. Returns each server's median rows, every round, the rates.
 */
async function runWorkloads(servers: Server[], valkeyPid: number | undefined) {
  const rows: RunRow[] = [];
  /** Every round of every server (rows keeps the median one): RSS and degraded checks read all. */
  const all: RunRow[] = [];
  const rates: Partial<Record<WorkloadName, number>> = {};
  for (const w of WORKLOADS) {
    const closedRounds: RunRow[][] = [];
    for (let i = 0; i < (CLOSED_ROUNDS_FOR.has(w) ? ROUNDS : 1); i++) {
      const round: RunRow[] = [];
      for (const s of servers) round.push(await load(s, w, 'closed', valkeyPid));
      closedRounds.push(round);
      all.push(...round);
    }
    rows.push(...medianClosedRows(closedRounds));
    if (CLOSED_ONLY.has(w)) continue;
    // The null server's maximum: its median closed-loop round (one lucky round must not set a rate
    // that a slower minute of this machine then cannot carry).
    const nullMax = rows.find((r) => r.workload === w && r.mode === 'closed' && r.server === 'null')!;
    // mix runs at the small workload's rate, so its small-call p99 compares with the all-small run.
    const base = w === 'mix' && rates.small ? rates.small * 2 : nullMax.result.perSecond;
    rates[w] = Math.max(1, Math.round(base / 2));
    const openRounds: RunRow[][] = [];
    for (let i = 0; i < (OPEN_ROUNDS_FOR.has(w) ? OPEN_ROUNDS : 1); i++) {
      const round: RunRow[] = [];
      for (const s of servers) round.push(await load(s, w, 'open', valkeyPid, rates[w]));
      openRounds.push(round);
      all.push(...round);
    }
    rows.push(...medianOpenRows(openRounds));
  }
  return { rows, all, rates };
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
