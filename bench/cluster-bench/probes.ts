/**
 * Valkey's own cost per script call, saturated: each class of call captured in a run replayed with
 * valkey-benchmark on the primary that ran it, that primary's CPU time read from /proc/<pid>/stat.
 */
import { execFileSync } from 'node:child_process';
import { cpuTicks } from '../procs.js';
import { CLK_TCK } from '../settings.js';
import { type Backend, type Captured, type RunRow, r1, type ScriptClass } from './common.js';

/** Saturation probe: valkey-benchmark replays of each captured script call (50 connections, pipeline 16). */
const PROBE_CALLS = Number(process.env.BENCH_PROBE_CALLS ?? 40_000);
const PROBE_ROUNDS = 3;

type Probe = NonNullable<ScriptClass['probe']>;

/** Runs whose captured script calls still need their saturation probe. */
const pending: Array<{ row: RunRow; samples: Array<{ cls: string; c: Captured }>; backend: Backend }> = [];

/** Queue a measured run's captured calls for the next `probePending()`. */
export function addPending(
  row: RunRow,
  samples: Array<{ cls: string; c: Captured }>,
  backend: Backend,
): void {
  pending.push({ row, samples, backend });
}

/** Replay one captured call with valkey-benchmark on its primary: CPU µs per call at saturation. */
function probe(c: Captured, pid: number): Probe {
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

/**
 * Valkey's own cost per call, saturated. The per-call figures of a run, at a few hundred calls/s per
 * primary, carry each server's idle work (cron, cluster bus, replication) and one wake-up per call; a
 * busy primary reads many calls per wake-up. Every pending class is replayed PROBE_ROUNDS times,
 * interleaved (the machine's load drifts), and its median µs per call kept.
 */
export function probePending(): void {
  const jobs = pending.flatMap((p) => p.samples.map((sm, i) => ({ p, i, c: sm.c })));
  const got = jobs.map(() => [] as Probe[]);
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
