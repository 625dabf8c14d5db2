/**
 * The capacity model (docs/cluster-capacity.md) from the Valkey-side cost: primaries and tollgate
 * cores for each target rate, every core planned for TARGET_UTILIZATION of its CPU.
 */
import { type RunRow, r1 } from './common.js';

/** Capacity model: plan every Valkey primary core and every tollgate core for this share of its CPU. */
export const TARGET_UTILIZATION = 0.5;
const TARGETS = [100_000, 1_000_000];

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

/** One layout's model from its run's script classes and their saturated cost. */
function layoutModel(layout: string, r: RunRow): CapacityLayout {
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
  return l;
}

/** The capacity model from the Valkey-side cost (on this machine tollgate is the bottleneck). */
export function capacityModel(cluster: RunRow, global: RunRow) {
  const layouts: CapacityLayout[] = [
    layoutModel('single slot (shard_by tenant, every limit per tenant)', cluster),
    layoutModel('slot-spanning (+ one global limit)', global),
  ];
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

export type CapacityModel = ReturnType<typeof capacityModel>;
