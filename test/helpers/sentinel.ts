/**
 * A real Sentinel topology for tests: one primary, one replica (`--replicaof`) and three sentinels
 * (`valkey-server <conf> --sentinel`, quorum 2, down-after 1 s, failover-timeout 3 s), private
 * processes on free ports in a temp dir, stopped in `close()`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import type { SentinelTarget } from '../../src/store/connect.js';
import { baseServerArgs, freePort, valkeyBinary, waitReady } from './valkey.js';

export const SENTINEL_NAME = 'tollgate-primary';

export interface Node {
  port: number;
  dir: string;
  proc: ChildProcess;
  client: Valkey;
}

export interface TestSentinel {
  /** The two data nodes (either may be the primary after a failover). */
  data: Node[];
  sentinels: Node[];
  /** What tollgate is given (VALKEY_SENTINELS / VALKEY_SENTINEL_NAME). */
  target: SentinelTarget;
  /** VALKEY_SENTINELS as the environment spells it. */
  env: Record<string, string>;
  /** The port the sentinels name as primary now. */
  primaryPort(): Promise<number>;
  /** The data node on that port, and the other one. */
  primary(): Promise<Node>;
  replica(): Promise<Node>;
  /** Wait until the sentinels name a primary other than `oldPort` and it accepts writes. */
  waitPromoted(oldPort: number, timeoutMs?: number): Promise<number>;
  /** Start a stopped data node again (empty, same port) as the current primary's replica. */
  restartAsReplica(node: Node): Promise<void>;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function client(port: number): Valkey {
  const c = new Valkey({ port, maxRetriesPerRequest: 1, retryStrategy: (t) => Math.min(t * 50, 500) });
  c.on('error', () => {});
  return c;
}

async function until(what: string, timeoutMs: number, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await ok().catch(() => false)) return;
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function startNode(bin: string, args: string[], port: number, dir = ''): Promise<Node> {
  const proc = spawn(bin, args, { stdio: 'ignore' });
  await waitReady(port, proc);
  return { port, dir, proc, client: client(port) };
}

export async function startSentinel(): Promise<TestSentinel> {
  const bin = valkeyBinary();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-sentinel-'));
  const data: Node[] = [];
  const sentinels: Node[] = [];
  const pPort = await freePort();
  data.push(await startNode(bin, ['--port', String(pPort), ...baseServerArgs(dir)], pPort, dir));
  const rPort = await freePort();
  const rDir = mkdtempSync(join(dir, 'replica-'));
  const replicaArgs = [
    '--port',
    String(rPort),
    ...baseServerArgs(rDir),
    '--replicaof',
    '127.0.0.1',
    String(pPort),
  ];
  data.push(await startNode(bin, replicaArgs, rPort, rDir));
  await until('the replica to sync', 10_000, async () =>
    /master_link_status:up/.test(await data[1].client.info('replication')),
  );
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const conf = join(dir, `sentinel-${i}.conf`);
    writeFileSync(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${SENTINEL_NAME} 127.0.0.1 ${pPort} 2`,
        `sentinel down-after-milliseconds ${SENTINEL_NAME} 1000`,
        `sentinel failover-timeout ${SENTINEL_NAME} 3000`,
        `sentinel parallel-syncs ${SENTINEL_NAME} 1`,
        '',
      ].join('\n'),
    );
    sentinels.push(await startNode(bin, [conf, '--sentinel'], port));
  }
  // Ready for a failover: every sentinel knows the replica and the two other sentinels.
  await until('the sentinels to find the replica and each other', 20_000, async () => {
    for (const s of sentinels) {
      const replicas = (await s.client.call('SENTINEL', 'REPLICAS', SENTINEL_NAME)) as unknown[];
      const others = (await s.client.call('SENTINEL', 'SENTINELS', SENTINEL_NAME)) as unknown[];
      if (replicas.length < 1 || others.length < 2) return false;
    }
    return true;
  });
  const target: SentinelTarget = {
    sentinels: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
    name: SENTINEL_NAME,
  };
  const primaryPort = async (): Promise<number> => {
    for (const s of sentinels) {
      if (s.proc.exitCode !== null) continue;
      try {
        const a = (await s.client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_NAME)) as string[];
        return Number(a[1]);
      } catch {}
    }
    throw new Error('no sentinel answered');
  };
  const byPort = (port: number) => data.find((d) => d.port === port)!;
  return {
    data,
    sentinels,
    target,
    env: {
      VALKEY_SENTINELS: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
      VALKEY_SENTINEL_NAME: SENTINEL_NAME,
    },
    primaryPort,
    primary: async () => byPort(await primaryPort()),
    replica: async () => {
      const p = await primaryPort();
      return data.find((d) => d.port !== p)!;
    },
    waitPromoted: async (oldPort, timeoutMs = 15_000) => {
      let port = oldPort;
      await until('a new primary', timeoutMs, async () => {
        port = await primaryPort();
        if (port === oldPort) return false;
        return /role:master/.test(await byPort(port).client.info('replication'));
      });
      return port;
    },
    restartAsReplica: async (node) => {
      const primary = await primaryPort();
      const args = ['--port', String(node.port), ...baseServerArgs(node.dir), '--replicaof', '127.0.0.1'];
      node.proc = spawn(bin, [...args, String(primary)], { stdio: 'ignore' });
      await waitReady(node.port, node.proc);
    },
    close: async () => {
      for (const n of [...sentinels, ...data]) {
        n.client.disconnect();
        if (n.proc.exitCode === null && n.proc.signalCode === null) {
          const exited = new Promise((r) => n.proc.once('exit', r));
          n.proc.kill('SIGKILL');
          await exited;
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
