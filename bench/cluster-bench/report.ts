/**
 * bench/cluster-bench.ts's output: its three tables and the tollgate line on stdout, and
 * bench/results/cluster-bench.json.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { DURATION_MS, ROOT, WARMUP_MS } from '../settings.js';
import { type CapacityModel, TARGET_UTILIZATION } from './capacity.js';
import { CONCURRENCY, REPLICAS_PER_PRIMARY, type RunRow } from './common.js';

/** Per run: throughput, latency and the cost per check. */
function runsTable(rows: RunRow[]): void {
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
}

/** Per primary of the cluster runs: the spread. */
function primariesTable(rows: RunRow[]): void {
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
}

/** Per layout: the capacity model's figures. */
function capacityTable(model: CapacityModel): void {
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
}

export function printTables(rows: RunRow[], model: CapacityModel): void {
  runsTable(rows);
  primariesTable(rows);
  capacityTable(model);
  console.log('tollgate:', model.tollgate);
}

/** bench/results/cluster-bench.json: the machine, the workload, every row and the capacity model. */
export function writeResults(
  rows: RunRow[],
  model: CapacityModel,
  uptimeBefore: string,
  uptimeAfter: string,
): void {
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
