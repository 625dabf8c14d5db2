/**
 * A real valkey-server for tests: VALKEY_URL when set, else a private server on a free port that the
 * test starts and stops. Never a mock. A missing binary is an error with the fix, never a skip.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';

export interface TestValkey {
  url: string;
  port: number;
  /** A plain client for inspecting state. */
  client: Valkey;
  /** Stop the server (SIGKILL when hard). Private servers only. */
  stop(hard?: boolean): Promise<void>;
  /** Start it again on the same port (empty). Private servers only. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** The arguments every private test server starts with: loopback only, no persistence, a temp dir. */
export function baseServerArgs(dir: string): string[] {
  return ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export function valkeyBinary(): string {
  for (const bin of ['valkey-server']) {
    try {
      execFileSync(bin, ['--version'], { stdio: 'ignore' });
      return bin;
    } catch {}
  }
  throw new Error(
    'valkey-server not found. Tests need a real Valkey: run `sudo bash scripts/install-valkey.sh` ' +
      '(installs valkey-server 8 from Debian bookworm-backports) or set VALKEY_URL to a server you own.',
  );
}

export async function waitReady(port: number, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`valkey-server exited with ${proc.exitCode}`);
    const c = new Valkey({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.ping();
      c.disconnect();
      return;
    } catch {
      c.disconnect();
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  throw new Error(`valkey-server did not answer on port ${port}`);
}

export async function startValkey(extraArgs: string[] = []): Promise<TestValkey> {
  if (process.env.VALKEY_URL && extraArgs.length === 0) {
    const client = new Valkey(process.env.VALKEY_URL.replace(/^valkey/, 'redis'));
    const u = new URL(process.env.VALKEY_URL);
    return {
      url: process.env.VALKEY_URL,
      port: Number(u.port || 6379),
      client,
      stop: async () => {
        throw new Error('cannot stop an external VALKEY_URL server');
      },
      restart: async () => {
        throw new Error('cannot restart an external VALKEY_URL server');
      },
      close: async () => {
        client.disconnect();
      },
    };
  }
  const bin = valkeyBinary();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-valkey-'));
  let proc: ChildProcess;
  const launch = async () => {
    proc = spawn(bin, ['--port', String(port), ...baseServerArgs(dir), ...extraArgs], {
      stdio: 'ignore',
    });
    await waitReady(port, proc);
  };
  await launch();
  const client = new Valkey({ port, maxRetriesPerRequest: 1, retryStrategy: (t) => Math.min(t * 50, 500) });
  client.on('error', () => {});
  const stop = async (hard = false) => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  return {
    url: `valkey://127.0.0.1:${port}`,
    port,
    client,
    stop,
    restart: launch,
    close: async () => {
      client.disconnect();
      await stop(true);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
