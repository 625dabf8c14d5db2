/**
 * The bench's settings (bench/run.ts): paths, and the BENCH_* knobs read from the environment once.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkloadName } from './workloads.js';

export const HERE = dirname(fileURLToPath(import.meta.url)); // dist/bench
export const ROOT = resolve(HERE, '..', '..');
export const CLK_TCK = 100;
export const env = process.env;
/** A non-negative number of seconds from the environment, in ms (a typo must not hang a run). */
export function envSeconds(name: string, def: number): number {
  const v = Number(env[name] ?? def);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name}: expected seconds ≥ 0, got "${env[name]}"`);
  return v * 1000;
}
export const DURATION_MS = envSeconds('BENCH_DURATION_S', 8);
export const WARMUP_MS = envSeconds('BENCH_WARMUP_S', 2);
/** Open loops: the load generator ramps up over the first half of this (bench/loadgen.ts). */
export const OPEN_WARMUP_MS = envSeconds('BENCH_OPEN_WARMUP_S', 3);
export const CONCURRENCY = Number(env.BENCH_CONCURRENCY ?? 64);
export const WORKLOADS = (env.BENCH_WORKLOADS ?? 'small,mix,deny,settle,agent,rag,medium').split(
  ',',
) as WorkloadName[];
export const ROUNDS = Math.max(1, Number(env.BENCH_ROUNDS ?? 3));
export const OPEN_ROUNDS = Math.max(1, Number(env.BENCH_OPEN_ROUNDS ?? 3));
/** Workloads whose closed-loop throughput is a target: measured in ROUNDS interleaved rounds. */
export const CLOSED_ROUNDS_FOR: ReadonlySet<WorkloadName> = new Set(['small', 'settle']);
/** Workloads measured in closed loops only (settle: its target is CPU per call, not latency). */
export const CLOSED_ONLY: ReadonlySet<WorkloadName> = new Set(['settle']);
/** Workloads whose open-loop p99 is a target: measured in OPEN_ROUNDS interleaved rounds. */
export const OPEN_ROUNDS_FOR: ReadonlySet<WorkloadName> = new Set(['small', 'mix']);
/** The tollgate config the bench serves (BENCH_CONFIG overrides, e.g. to compare server settings). */
export const CONFIG = env.BENCH_CONFIG ?? join(ROOT, 'bench', 'configs', 'bench.yaml');
/** Node flags of `npm start` and the container image's CMD, given to every server (null included). */
/** Node flags of every server process (BENCH_NODE_FLAGS adds more, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`). */
export const NODE_FLAGS = [
  '--max-semi-space-size=8',
  ...(env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean),
];
