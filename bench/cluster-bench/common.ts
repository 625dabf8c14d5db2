/**
 * bench/cluster-bench.ts's shared pieces: its fixed settings, the rows it measures and the backend
 * (standalone or cluster) a run is measured on.
 */
import type { Valkey } from 'iovalkey';
import type { TestCluster } from '../../test/helpers/valkey-cluster.js';
import type { LatencySummary } from '../loadgen.js';

export const CONCURRENCY = 64;
export const REPLICAS_PER_PRIMARY = 1;
/** BENCH_RUNS=cluster,cluster-global: only these runs (a partial run writes no results file). */
export const ONLY = process.env.BENCH_RUNS?.split(',');

export const r1 = (x: number) => Math.round(x * 10) / 10;

export type RunName = 'standalone-resp' | 'standalone-iovalkey' | 'cluster' | 'cluster-global';

export interface Backend {
  url: string;
  /** Every server process: port, pid, role. */
  nodes: Array<{ port: number; pid: number; role: 'primary' | 'replica' }>;
  client(port: number): Valkey;
  cluster?: TestCluster;
}

/** One script call captured with MONITOR: the primary it ran on, its argv, how many of its class. */
export interface Captured {
  port: number;
  argv: string[];
  count: number;
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
