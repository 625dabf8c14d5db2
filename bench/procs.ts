/**
 * The bench's processes: the servers under test (null, tollgate memory, tollgate valkey), the
 * valkey-server, child bench scripts; and their CPU time and RSS read from /proc/<pid>.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLK_TCK, CONFIG, env, HERE, NODE_FLAGS, ROOT } from './settings.js';

export type ServerName = 'null' | 'memory' | 'valkey';

export interface Server {
  name: ServerName;
  proc: ChildProcess;
  grpcPort: number;
  httpPort: number;
  startupMs: number;
  idleRssMb: number;
}

export interface ProcUsage {
  cpuPercent: number;
  /** CPU time (user + system, all threads) over the whole load run, warm-up included. */
  cpuSeconds: number;
  rssMaxMb: number;
  rssEndMb: number;
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const p = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(p));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
}

export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : 0;
}

/** Sample CPU and RSS of a process while `work` runs. */
export class Meter {
  private ticks0: number;
  private t0 = performance.now();
  private max = 0;
  private timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.ticks0 = cpuTicks(pid);
    this.max = rssMb(pid);
    this.timer = setInterval(() => {
      this.max = Math.max(this.max, rssMb(pid));
    }, 250);
  }
  stop(): ProcUsage {
    clearInterval(this.timer);
    const secs = (performance.now() - this.t0) / 1000;
    const end = rssMb(this.pid);
    const cpuSeconds = (cpuTicks(this.pid) - this.ticks0) / CLK_TCK;
    return {
      cpuPercent: Math.round((cpuSeconds / secs) * 1000) / 10,
      cpuSeconds,
      rssMaxMb: Math.max(this.max, end),
      rssEndMb: end,
    };
  }
}

export function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((res) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 500 }, (r) => {
      r.resume();
      res(r.statusCode ?? 0);
    });
    req.on('error', () => res(0));
    req.on('timeout', () => {
      req.destroy();
      res(0);
    });
    req.end();
  });
}

/** `config`: the TOLLGATE_CONFIG file given to the server (bench/configs/bench.yaml by default). */
export async function startServer(name: ServerName, valkeyUrl?: string, config = CONFIG): Promise<Server> {
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const script = name === 'null' ? join(HERE, 'null-server.js') : join(ROOT, 'dist', 'src', 'cli.js');
  const t0 = performance.now();
  const proc = spawn(process.execPath, [...NODE_FLAGS, ...(name === 'null' ? [script] : [script, 'serve'])], {
    cwd: ROOT,
    env: {
      ...env,
      TOLLGATE_CONFIG: config,
      TOLLGATE_GRPC_PORT: String(grpcPort),
      TOLLGATE_HTTP_PORT: String(httpPort),
      LOG_LEVEL: env.BENCH_LOG_LEVEL ?? 'warn',
      // As in the container image (deploy/Dockerfile).
      MALLOC_ARENA_MAX: env.MALLOC_ARENA_MAX ?? '2',
      MALLOC_MMAP_THRESHOLD_: env.MALLOC_MMAP_THRESHOLD_ ?? '131072',
      ...(valkeyUrl ? { VALKEY_URL: valkeyUrl } : { VALKEY_URL: '' }),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const deadline = t0 + 20_000;
  while ((await httpStatus(httpPort, '/readyz')) !== 200) {
    if (proc.exitCode !== null) throw new Error(`${name} server exited with ${proc.exitCode}`);
    if (performance.now() > deadline) throw new Error(`${name} server not ready after 20 s`);
    await sleep(5);
  }
  const startupMs = Math.round(performance.now() - t0);
  await sleep(300);
  return { name, proc, grpcPort, httpPort, startupMs, idleRssMb: rssMb(proc.pid!) };
}

export async function startValkey(): Promise<{ proc: ChildProcess; port: number; dir: string }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-bench-valkey-'));
  const proc = spawn(
    'valkey-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 400; i++) {
    try {
      execFileSync('valkey-cli', ['-p', String(port), 'ping'], { stdio: 'pipe' });
      return { proc, port, dir };
    } catch {
      await sleep(25);
    }
  }
  throw new Error('valkey-server did not start');
}

/**
 * Run a bench script in its own process; its last stdout line is its result. `onLine` sees every
 * earlier line (the load generator's "measuring" mark) and the result line as it arrives.
 */
export function runChild<T>(
  script: string,
  arg: unknown,
  onLine?: (line: string) => void,
): Promise<{ out: T; cpuPercent: number }> {
  return new Promise((res, rej) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [join(HERE, script), JSON.stringify(arg)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buf = '';
    let ticks = 0;
    const timer = setInterval(() => {
      try {
        ticks = cpuTicks(p.pid!);
      } catch {}
    }, 200);
    let seen = 0;
    p.stdout!.on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n', seen); nl >= 0; nl = buf.indexOf('\n', seen)) {
        onLine?.(buf.slice(seen, nl));
        seen = nl + 1;
      }
    });
    p.on('close', (code) => {
      // 'close', not 'exit': stdout is fully read only when the stdio streams have closed.
      clearInterval(timer);
      if (code !== 0) return rej(new Error(`${script} exited with ${code}`));
      const last = buf.trim().split('\n').pop() ?? '';
      if (!last) return rej(new Error(`${script} printed no result`));
      const secs = (performance.now() - t0) / 1000;
      res({
        out: JSON.parse(last),
        cpuPercent: Math.round((ticks / CLK_TCK / secs) * 1000) / 10,
      });
    });
  });
}
