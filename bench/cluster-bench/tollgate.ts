/**
 * The tollgate server of a run: bench/configs/bench.yaml with the run's store section, started and
 * stopped through bench/procs.ts, and the slot-spanning and compensation counters of its /metrics.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { dump as yamlDump, load as yamlLoad } from 'js-yaml';
import { type Server, startServer } from '../procs.js';
import { ROOT } from '../settings.js';
import type { RunName } from './common.js';

/** bench/configs/bench.yaml with the run's store section (and the global limit). */
export function configFor(run: RunName, dir: string): string {
  const cfg = yamlLoad(readFileSync(join(ROOT, 'bench', 'configs', 'bench.yaml'), 'utf8')) as any;
  // Cost per check is what is measured, not the latency objective: on two shared cores a check can
  // wait in tollgate's own backlog for hundreds of ms, and with bench.yaml's 50 ms deadline (150 ms
  // overload budget) it would be shed or answered degraded without reaching Valkey.
  cfg.server.decision_deadline = '2s';
  cfg.server.overload_budget = '10s';
  cfg.store.timeout = '1s';
  if (run === 'standalone-iovalkey') cfg.store.client = 'iovalkey';
  if (run === 'cluster' || run === 'cluster-global') {
    cfg.store.topology = 'cluster';
    cfg.store.shard_by = 'tenant';
  }
  // Last, so the reservation record stays in the tenant's slot (it follows the first limit).
  if (run === 'cluster-global')
    cfg.limits.push({ name: 'global-requests', requests: 1_000_000_000_000, every: '1m' });
  const file = join(dir, `${run}.yaml`);
  writeFileSync(file, yamlDump(cfg));
  return file;
}

/** tollgate on `valkeyUrl` with the run's config, ready (/readyz) and settled. */
export function startTollgate(run: RunName, dir: string, valkeyUrl: string): Promise<Server> {
  return startServer('valkey', valkeyUrl, configFor(run, dir));
}

/** SIGTERM, SIGKILL after 5 s; resolves when the process has exited. */
export async function stopTollgate(tg: Server): Promise<void> {
  const exited = new Promise((r) => tg.proc.once('exit', r));
  tg.proc.kill('SIGTERM');
  const t = setTimeout(() => tg.proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

/** The body of a GET (empty on an error or after 2 s). */
function httpBody(port: number, path: string): Promise<string> {
  return new Promise((res) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 2000 }, (r) => {
      let body = '';
      r.on('data', (d) => {
        body += d;
      });
      r.on('end', () => res(body));
    });
    req.on('error', () => res(''));
    req.on('timeout', () => {
      req.destroy();
      res('');
    });
    req.end();
  });
}

/** Sum of a counter's samples in a Prometheus text exposition (0 when absent). */
function counter(text: string, name: string): number {
  let n = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'gm'))) n += Number(m[1]);
  return n;
}

export async function metrics(port: number): Promise<{ spanning: number; compensations: number }> {
  const body = await httpBody(port, '/metrics');
  return {
    spanning: counter(body, 'tollgate_store_slot_spanning_checks_total'),
    compensations: counter(body, 'tollgate_store_compensations_total'),
  };
}
