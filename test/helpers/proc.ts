/**
 * Run the real CLI (`node dist/src/cli.js serve`) as a child process, the way it runs in production:
 * config from TOLLGATE_CONFIG, ports from TOLLGATE_GRPC_PORT / TOLLGATE_HTTP_PORT, store from VALKEY_URL.
 * `npm test` builds dist/ first (tsc).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './valkey.js';

export const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src', 'cli.js');

export interface TollgateProc {
  proc: ChildProcess;
  pid: number;
  grpcPort: number;
  httpPort: number;
  /** The HTTP authorization mode's port, when spawned with `authzHttp: true`. */
  authzHttpPort?: number;
  configFile: string;
  /** stdout + stderr so far (pino JSON lines, start-up errors). */
  output(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Send a signal and wait for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface SpawnOptions {
  /** Config YAML (written to a temp file) or an existing file. */
  yaml?: string;
  configFile?: string;
  env?: Record<string, string | undefined>;
  grpcPort?: number;
  httpPort?: number;
  /** Turn the HTTP authorization mode on, on a free port (TOLLGATE_HTTP_AUTHZ_PORT). */
  authzHttp?: boolean;
  readyTimeoutMs?: number;
  /** Start under `ulimit -v` (KiB of address space), through /bin/sh. */
  ulimitVKiB?: number;
}

export async function spawnTollgate(o: SpawnOptions): Promise<TollgateProc> {
  // A free port can be taken by another test process between picking it and the child binding it:
  // then start again on other ports (only when the ports were picked here).
  const picked = o.grpcPort === undefined && o.httpPort === undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnOnce(o);
    } catch (err) {
      if (!picked || attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function spawnOnce(o: SpawnOptions): Promise<TollgateProc> {
  if (!existsSync(CLI)) throw new Error(`${CLI} missing: run \`npm run build\` (npm test does it first)`);
  let configFile = o.configFile;
  if (!configFile) {
    configFile = join(mkdtempSync(join(tmpdir(), 'tollgate-proc-')), 'tollgate.yaml');
    writeFileSync(configFile, o.yaml ?? '');
  }
  const grpcPort = o.grpcPort ?? (await freePort());
  const httpPort = o.httpPort ?? (await freePort());
  const authzHttpPort = o.authzHttp ? await freePort() : undefined;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('VITEST')) env[k] = v;
  delete env.VALKEY_URL;
  for (const k of Object.keys(env)) if (k.startsWith('TOLLGATE_')) delete env[k];
  Object.assign(env, {
    LOG_LEVEL: 'info',
    TOLLGATE_CONFIG: configFile,
    TOLLGATE_GRPC_PORT: String(grpcPort),
    TOLLGATE_HTTP_PORT: String(httpPort),
  });
  if (authzHttpPort !== undefined) env.TOLLGATE_HTTP_AUTHZ_PORT = String(authzHttpPort);
  for (const [k, v] of Object.entries(o.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const proc =
    o.ulimitVKiB === undefined
      ? spawn(process.execPath, [CLI, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(
          '/bin/sh',
          ['-c', `ulimit -v ${o.ulimitVKiB} && exec "$0" "$@"`, process.execPath, CLI, 'serve'],
          {
            env,
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
  const chunks: string[] = [];
  proc.stdout!.on('data', (c) => chunks.push(String(c)));
  proc.stderr!.on('data', (c) => chunks.push(String(c)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const output = () => chunks.join('');
  const deadline = Date.now() + (o.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`tollgate exited during start-up (${proc.exitCode ?? proc.signalCode}):\n${output()}`);
    try {
      const r = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
      if (r.status === 200) break;
    } catch {}
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`tollgate not ready after ${o.readyTimeoutMs ?? 30_000} ms:\n${output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    pid: proc.pid!,
    grpcPort,
    httpPort,
    authzHttpPort,
    configFile,
    output,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Parsed pino lines of a process's output (non-JSON lines skipped). */
export function logLines(text: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line));
    } catch {}
  }
  return out;
}
