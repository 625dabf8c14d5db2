/**
 * The parts of test/helpers/valkey-cluster.ts: its types, CLUSTER NODES parsing, valkey-cli runs and
 * small waits (kept apart so each file stays readable).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { Valkey } from 'iovalkey';

export const CLUSTER_SLOTS = 16384;

export interface StartClusterOptions {
  /** Primaries (at least 3, valkey-cli's minimum). */
  primaries?: number;
  replicasPer?: number;
  /** cluster-node-timeout: how long a silent primary takes to be marked failed. */
  nodeTimeoutMs?: number;
}

/** One node as CLUSTER NODES describes it now. */
export interface ClusterNode {
  id: string;
  port: number;
  role: 'primary' | 'replica';
  /** The primary's id, for a replica. */
  primaryId?: string;
  /** Inclusive slot ranges, for a primary. */
  slots: Array<[number, number]>;
  /** Number of slots it owns. */
  slotCount: number;
  /** `fail` or `fail?` in its flags. */
  failing: boolean;
}

export interface ReshardOptions {
  /** Node id or port of a primary. */
  from: string | number;
  to: string | number;
  slots: number;
}

export interface ReshardResult {
  slots: number;
  ms: number;
  from: string;
  to: string;
}

export interface KillResult {
  killedPort: number;
  newPrimaryPort: number;
  /** From the SIGKILL until a replica owned the killed primary's slots on every live node. */
  promotedMs: number;
  /** From the SIGKILL until every live node reports cluster_state:ok again. */
  ms: number;
}

export interface TestCluster {
  /** `127.0.0.1:port` of every node. */
  seeds: string[];
  /** VALKEY_URL naming every primary (at start) as a seed: `valkey://127.0.0.1:p1,127.0.0.1:p2,…`. */
  url: string;
  /** Every node's port, in start order. */
  ports: number[];
  /** Current roles, from a live node's CLUSTER NODES (dead nodes left out). */
  primaries(): Promise<ClusterNode[]>;
  replicas(): Promise<ClusterNode[]>;
  nodes(): Promise<ClusterNode[]>;
  /** The primary that owns `slot` now. */
  slotOwner(slot: number): Promise<ClusterNode>;
  /** CLUSTER KEYSLOT. */
  keySlot(key: string): Promise<number>;
  /** Move `slots` slots (and their keys) with valkey-cli; resolves when every node agrees. */
  reshard(opts: ReshardOptions): Promise<ReshardResult>;
  /** The same, started now; `done` resolves as `reshard` does (start load, then await `done`). */
  startReshard(opts: ReshardOptions): { done: Promise<ReshardResult> };
  /** SIGKILL a primary (default: the one owning slot 0), wait for its replica's promotion and cluster_state:ok. */
  killPrimary(port?: number): Promise<KillResult>;
  /** Start a killed node again (same port, same nodes.conf): it rejoins as a replica. */
  restartNode(port: number): Promise<void>;
  /** DBSIZE per live primary. */
  keysPerNode(): Promise<Array<{ port: number; id: string; keys: number }>>;
  /** INFO commandstats calls per live primary, by lower-case command name (`evalsha`, `set`, …). */
  commandCalls(): Promise<Array<{ port: number; id: string; calls: Record<string, number> }>>;
  /** CONFIG RESETSTAT on every live node. */
  resetStats(): Promise<void>;
  /** A plain (non-cluster) client on one node, for inspection. */
  client(port: number): Valkey;
  /** Resolves when every live node reports cluster_state:ok, all slots, and the same slot owners. */
  waitConverged(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface Proc {
  port: number;
  busPort: number;
  dir: string;
  proc: ChildProcess;
  client: Valkey;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function inspector(port: number): Valkey {
  const c = new Valkey({ port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  c.on('error', () => {});
  return c;
}

export function valkeyCliBinary(): string {
  try {
    execFileSync('valkey-cli', ['--version'], { stdio: 'ignore' });
    return 'valkey-cli';
  } catch {
    throw new Error(
      'valkey-cli not found. Cluster tests need it to create and reshard the cluster: run ' +
        '`sudo bash scripts/install-valkey.sh` (installs valkey-server 8 and valkey-tools).',
    );
  }
}

export async function until(what: string, timeoutMs: number, ok: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await ok()) return;
    } catch (e) {
      last = e;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
}

export function runCli(cli: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cli, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout!.on('data', (b) => {
      out += b;
    });
    p.stderr!.on('data', (b) => {
      out += b;
    });
    p.once('error', reject);
    p.once('exit', (code) => {
      if (code === 0 && !/\[ERR\]/.test(out)) resolve(out);
      else reject(new Error(`${cli} ${args.join(' ')} exited ${code}:\n${out.slice(-2000)}`));
    });
  });
}

/** Parse CLUSTER NODES (open-slot markers like `[5461->-id]` are left out). */
export function parseClusterNodes(text: string): ClusterNode[] {
  const nodes: ClusterNode[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(' ');
    if (f.length < 8) continue;
    const [id, addr, flags, primary] = f;
    const fl = flags.split(',');
    if (fl.includes('handshake') || fl.includes('noaddr')) continue;
    const port = Number(addr.split('@')[0].split(':').pop());
    const slots: Array<[number, number]> = [];
    for (const s of f.slice(8)) {
      if (s.startsWith('[')) continue;
      const [a, b] = s.split('-').map(Number);
      slots.push([a, b ?? a]);
    }
    nodes.push({
      id,
      port,
      role: fl.includes('master') ? 'primary' : 'replica',
      primaryId: primary === '-' ? undefined : primary,
      slots,
      slotCount: slots.reduce((n, [a, b]) => n + b - a + 1, 0),
      failing: fl.includes('fail') || fl.includes('fail?'),
    });
  }
  return nodes.sort((a, b) => a.port - b.port);
}

export function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim();
}
