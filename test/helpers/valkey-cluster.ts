/**
 * A real Valkey Cluster for tests and benches: `primaries × (1 + replicasPer)` private
 * `valkey-server --cluster-enabled yes` processes on free ports (client port and cluster-bus port both
 * picked free, so the bus never lands on port+10000 above 65535), each in its own temp dir, joined with
 * `valkey-cli --cluster create … --cluster-replicas N --cluster-yes`, ready when every node reports
 * `cluster_state:ok` with all 16384 slots assigned and every replica is in sync. Stopped in `stop()`
 * (and SIGKILLed if the test process exits first). Never a mock; a missing binary is an error with the fix.
 *
 * bench/cluster-clients.ts imports this file too (the one copy of the cluster starter).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseServerArgs, freePort, valkeyBinary, waitReady } from './valkey.js';
import {
  CLUSTER_SLOTS,
  type ClusterNode,
  infoField,
  inspector,
  type Proc,
  parseClusterNodes,
  type ReshardOptions,
  runCli,
  type StartClusterOptions,
  type TestCluster,
  until,
  valkeyCliBinary,
} from './valkey-cluster-parts.js';

export {
  CLUSTER_SLOTS,
  type ClusterNode,
  type KillResult,
  parseClusterNodes,
  type ReshardOptions,
  type ReshardResult,
  type StartClusterOptions,
  type TestCluster,
  valkeyCliBinary,
} from './valkey-cluster-parts.js';

export async function startCluster(opts: StartClusterOptions = {}): Promise<TestCluster> {
  const { primaries = 3, replicasPer = 1, nodeTimeoutMs = 1000 } = opts;
  if (primaries < 3) throw new Error('valkey-cli --cluster create needs at least 3 primaries');
  const bin = valkeyBinary();
  const cli = valkeyCliBinary();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-'));
  const procs = new Map<number, Proc>();
  const killAll = () => {
    for (const p of procs.values())
      if (p.proc.exitCode === null && p.proc.signalCode === null) p.proc.kill('SIGKILL');
  };
  // A test process that dies without stop() must not leave six servers behind.
  process.once('exit', killAll);

  const args = (p: Proc) => [
    '--port',
    String(p.port),
    ...baseServerArgs(p.dir),
    '--cluster-enabled',
    'yes',
    '--cluster-port',
    String(p.busPort),
    '--cluster-config-file',
    join(dir, `nodes-${p.port}.conf`),
    '--cluster-node-timeout',
    String(nodeTimeoutMs),
  ];
  const launch = async (p: Proc) => {
    p.proc = spawn(bin, args(p), { stdio: 'ignore' });
    await waitReady(p.port, p.proc);
  };
  const alive = (p: Proc) => p.proc.exitCode === null && p.proc.signalCode === null;
  const live = () => [...procs.values()].filter(alive);

  try {
    const total = primaries * (1 + replicasPer);
    const used = new Set<number>();
    const pick = async () => {
      for (;;) {
        const port = await freePort();
        if (!used.has(port)) {
          used.add(port);
          return port;
        }
      }
    };
    for (let i = 0; i < total; i++) {
      const port = await pick();
      const busPort = await pick();
      const nodeDir = join(dir, String(port));
      mkdirSync(nodeDir);
      const p: Proc = {
        port,
        busPort,
        dir: nodeDir,
        proc: undefined as unknown as ChildProcess,
        client: inspector(port),
      };
      procs.set(port, p);
      await launch(p);
    }
    const ports = [...procs.keys()];
    await runCli(cli, [
      '--cluster',
      'create',
      ...ports.map((p) => `127.0.0.1:${p}`),
      '--cluster-replicas',
      String(replicasPer),
      '--cluster-yes',
    ]);

    const viewOf = async (p: Proc) => parseClusterNodes(String(await p.client.call('CLUSTER', 'NODES')));
    const view = async (): Promise<ClusterNode[]> => {
      let last: unknown;
      for (const p of live()) {
        try {
          return (await viewOf(p)).filter((n) => {
            const pr = procs.get(n.port);
            return pr ? alive(pr) : true;
          });
        } catch (e) {
          last = e;
        }
      }
      throw new Error(`no cluster node answered: ${String(last)}`);
    };
    const ownerMap = (nodes: ClusterNode[]) =>
      nodes
        .filter((n) => n.role === 'primary' && n.slotCount > 0)
        .map((n) => `${n.id}:${n.slots.map(([a, b]) => `${a}-${b}`).join(',')}`)
        .sort()
        .join(' ');
    const waitConverged = async (timeoutMs = 20_000) => {
      await until('every node to report cluster_state:ok and agree on slot owners', timeoutMs, async () => {
        let agreed: string | undefined;
        for (const p of live()) {
          const info = String(await p.client.call('CLUSTER', 'INFO'));
          if (infoField(info, 'cluster_state') !== 'ok') return false;
          if (Number(infoField(info, 'cluster_slots_assigned')) !== CLUSTER_SLOTS) return false;
          if (Number(infoField(info, 'cluster_slots_ok')) !== CLUSTER_SLOTS) return false;
          const nodes = await viewOf(p);
          // A node with open slots (an unfinished migration) is not converged.
          if (/\[\d+-[<>]-/.test(String(await p.client.call('CLUSTER', 'NODES')))) return false;
          const m = ownerMap(nodes.filter((n) => n.role === 'primary' && !n.failing));
          if (agreed === undefined) agreed = m;
          else if (agreed !== m) return false;
        }
        return true;
      });
    };
    const waitReplicasSynced = async (timeoutMs = 20_000) => {
      await until('every replica to sync with its primary', timeoutMs, async () => {
        for (const p of live()) {
          const info = await p.client.info('replication');
          if (infoField(info, 'role') === 'slave' && infoField(info, 'master_link_status') !== 'up')
            return false;
        }
        return true;
      });
    };
    await waitConverged();
    await waitReplicasSynced();

    const idOf = async (x: string | number) => {
      if (typeof x === 'string') return x;
      const n = (await view()).find((v) => v.port === x);
      if (!n) throw new Error(`no live node on port ${x}`);
      return n.id;
    };
    const startReshard = (o: ReshardOptions) => {
      const done = (async () => {
        const t0 = performance.now();
        const from = await idOf(o.from);
        const to = await idOf(o.to);
        const any = live()[0];
        await runCli(cli, [
          '--cluster',
          'reshard',
          `127.0.0.1:${any.port}`,
          '--cluster-from',
          from,
          '--cluster-to',
          to,
          '--cluster-slots',
          String(o.slots),
          '--cluster-yes',
        ]);
        await waitConverged();
        return { slots: o.slots, ms: Math.round(performance.now() - t0), from, to };
      })();
      return { done };
    };
    const primariesNow = async () => (await view()).filter((n) => n.role === 'primary');
    const initialPrimaries = await primariesNow();

    const cluster: TestCluster = {
      seeds: ports.map((p) => `127.0.0.1:${p}`),
      url: `valkey://${initialPrimaries.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
      ports,
      nodes: view,
      primaries: primariesNow,
      replicas: async () => (await view()).filter((n) => n.role === 'replica'),
      slotOwner: async (slot) => {
        const owner = (await primariesNow()).find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b));
        if (!owner) throw new Error(`no primary owns slot ${slot}`);
        return owner;
      },
      keySlot: async (key) => Number(await live()[0].client.call('CLUSTER', 'KEYSLOT', key)),
      startReshard,
      reshard: (o) => startReshard(o).done,
      killPrimary: async (port) => {
        const prims = await primariesNow();
        const victim =
          port === undefined
            ? await cluster.slotOwner(0)
            : prims.find((n) => n.port === port && n.slotCount > 0);
        if (!victim) throw new Error(`port ${port} is not a live primary that owns slots`);
        if (!(await view()).some((n) => n.primaryId === victim.id && !n.failing)) {
          throw new Error(`primary ${victim.port} has no live replica to promote`);
        }
        const p = procs.get(victim.port)!;
        const exited = new Promise((r) => p.proc.once('exit', r));
        const t0 = performance.now();
        p.proc.kill('SIGKILL');
        await exited;
        p.client.disconnect();
        const [a] = victim.slots[0];
        let newPort = 0;
        await until(`a replica of ${victim.port} to take slot ${a}`, 30_000, async () => {
          for (const q of live()) {
            const owner = (await viewOf(q)).find(
              (n) => n.role === 'primary' && !n.failing && n.slots.some(([x, y]) => a >= x && a <= y),
            );
            if (!owner || owner.id === victim.id) return false;
            newPort = owner.port;
          }
          return true;
        });
        const promotedMs = Math.round(performance.now() - t0);
        await waitConverged(30_000);
        return {
          killedPort: victim.port,
          newPrimaryPort: newPort,
          promotedMs,
          ms: Math.round(performance.now() - t0),
        };
      },
      restartNode: async (port) => {
        const p = procs.get(port);
        if (!p) throw new Error(`port ${port} is not one of this cluster's nodes`);
        if (alive(p)) return;
        await launch(p);
        p.client = inspector(port);
        await until(`node ${port} to rejoin`, 20_000, async () => {
          const info = String(await p.client.call('CLUSTER', 'INFO'));
          return infoField(info, 'cluster_state') === 'ok';
        });
        await waitConverged();
        await waitReplicasSynced();
      },
      keysPerNode: async () => {
        const out: Array<{ port: number; id: string; keys: number }> = [];
        for (const n of await primariesNow()) {
          out.push({ port: n.port, id: n.id, keys: Number(await procs.get(n.port)!.client.dbsize()) });
        }
        return out;
      },
      commandCalls: async () => {
        const out: Array<{ port: number; id: string; calls: Record<string, number> }> = [];
        for (const n of await primariesNow()) {
          const info = await procs.get(n.port)!.client.info('commandstats');
          const calls: Record<string, number> = {};
          for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1]] = Number(m[2]);
          out.push({ port: n.port, id: n.id, calls });
        }
        return out;
      },
      resetStats: async () => {
        for (const p of live()) await p.client.call('CONFIG', 'RESETSTAT');
      },
      client: (port) => {
        const p = procs.get(port);
        if (!p) throw new Error(`port ${port} is not one of this cluster's nodes`);
        return p.client;
      },
      waitConverged,
      stop: async () => {
        process.removeListener('exit', killAll);
        for (const p of procs.values()) {
          p.client.disconnect();
          if (alive(p)) {
            const exited = new Promise((r) => p.proc.once('exit', r));
            p.proc.kill('SIGKILL');
            await exited;
          }
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return cluster;
  } catch (e) {
    for (const p of procs.values()) p.client.disconnect();
    killAll();
    process.removeListener('exit', killAll);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
