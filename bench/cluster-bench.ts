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
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startValkey, type TestValkey } from '../test/helpers/valkey.js';
import { startCluster, type TestCluster } from '../test/helpers/valkey-cluster.js';
import { clusterBackend, standaloneBackend } from './cluster-bench/backends.js';
import { capacityModel } from './cluster-bench/capacity.js';
import { ONLY, REPLICAS_PER_PRIMARY, type RunName, type RunRow } from './cluster-bench/common.js';
import { measure } from './cluster-bench/measure.js';
import { probePending } from './cluster-bench/probes.js';
import { printTables, writeResults } from './cluster-bench/report.js';

/** Every run BENCH_RUNS asks for (all by default), each backend's saturation probes after its runs. */
async function runAll(dir: string): Promise<RunRow[]> {
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
  }
  return rows;
}

async function main() {
  const uptimeBefore = execFileSync('uptime', { encoding: 'utf8' }).trim();
  console.error(`# ${uptimeBefore}`);
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-bench-'));
  let rows: RunRow[];
  try {
    rows = await runAll(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const uptimeAfter = execFileSync('uptime', { encoding: 'utf8' }).trim();
  if (ONLY) {
    console.log(JSON.stringify(rows, null, 2));
    return;
  }
  const model = capacityModel(rows[2], rows[3]);
  printTables(rows, model);
  writeResults(rows, model, uptimeBefore, uptimeAfter);
}

await main();
process.exit(0);
