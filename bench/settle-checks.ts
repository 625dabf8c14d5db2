/**
 * The `settle` workload's proof and target: that tollgate settled the calls (its
 * tollgate_settlements_total, read from /metrics once the workloads are done), and issue 24's "CPU per
 * settled call (check + stream) ≤ 1.5× a check alone" (the same server's CPU per small-chat check).
 */
import { request } from 'node:http';
import type { RunRow } from './measure.js';
import { type Server, sleep } from './procs.js';
import { fx, median } from './rounds.js';
import type { Check } from './verdicts.js';

/** Per tollgate server: tollgate_settlements_total by outcome. */
export type Settlements = Record<string, Record<string, number>>;

/** Settlements expected: at least this share of the settle workload's streams (warm-ups included). */
const MIN_SETTLED_SHARE = 0.99;
export const SETTLE_CPU_TARGET = 1.5;

function httpGet(port: number, path: string): Promise<string> {
  return new Promise((res, rej) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 5000 }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d) => {
        body += d;
      });
      r.on('end', () => res(body));
    });
    req.on('error', rej);
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timeout`)));
    req.end();
  });
}

/** tollgate_settlements_total{outcome} of every tollgate server (after the last settlements landed). */
export async function readSettlements(servers: Server[]): Promise<Settlements> {
  await sleep(1000); // a stream's settlement finishes after tollgate ended the stream
  const out: Settlements = {};
  for (const s of servers.filter((x) => x.name !== 'null')) {
    const text = await httpGet(s.httpPort, '/metrics');
    const by: Record<string, number> = {};
    for (const m of text.matchAll(/^tollgate_settlements_total\{outcome="([a-z_]+)"\} (\S+)$/gm))
      by[m[1]] = Number(m[2]);
    out[s.name] = by;
    const list = Object.entries(by).map(([k, v]) => `${k} ${v}`);
    console.error(`  ${s.name}: tollgate_settlements_total ${list.length ? list.join(', ') : 'none'}`);
  }
  return out;
}

/** ext_proc streams `server` ended over the whole run (every settle round, warm-ups included). */
const settleStreams = (all: RunRow[], server: string) =>
  all
    .filter((r) => r.workload === 'settle' && r.server === server)
    .reduce((a, r) => a + (r.result.streams ?? 0), 0);

/** Median CPU µs per call of `server`'s closed-loop rounds of workload `w`. */
const cpuPerCall = (all: RunRow[], w: string, server: string) => {
  const xs = all.filter((r) => r.workload === w && r.mode === 'closed' && r.server === server);
  return xs.length ? median(xs.map((r) => r.cpu_us_per_check)) : undefined;
};

/** The settle rows' verdicts: settlements happened, and CPU per settled call vs a small check. */
export function settleChecks(all: RunRow[], settlements: Settlements | undefined): Check[] {
  const checks: Check[] = [];
  for (const s of ['null', 'memory', 'valkey']) {
    const settle = cpuPerCall(all, 'settle', s);
    const small = cpuPerCall(all, 'small', s);
    if (settle === undefined || small === undefined) continue;
    const r = settle / small;
    const rounds = all.filter((x) => x.workload === 'settle' && x.server === s).length;
    checks.push({
      target: `settle: CPU per settled call (${s}) ≤ ${SETTLE_CPU_TARGET}× a small check's`,
      value: `${fx(r)} (${Math.round(settle)} vs ${Math.round(small)} µs, medians of ${rounds} closed-loop rounds)`,
      // the null server is the floor's own ratio (shown, not a target)
      pass: s === 'null' || r <= SETTLE_CPU_TARGET,
    });
  }
  for (const [s, by] of Object.entries(settlements ?? {})) {
    const calls = settleStreams(all, s);
    const settled = by.settled ?? 0;
    // a Check decided without the store (degraded) left no record to settle: its stream ends `expired`
    const degraded = all
      .filter((r) => r.workload === 'settle' && r.server === s)
      .reduce((a, r) => a + (r.result.degraded ?? 0), 0);
    checks.push({
      target: `settle: reservations settled (${s}) ≥ ${MIN_SETTLED_SHARE * 100}% of ext_proc streams`,
      value: `${settled} settled of ${calls} streams (${Object.entries(by)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}; ${degraded} degraded Checks)`,
      pass: calls > 0 && settled >= MIN_SETTLED_SHARE * calls - degraded,
    });
  }
  return checks;
}

/** A settle workload that settled nothing measured nothing: fail the whole run, loudly. */
export function assertSettled(settlements: Settlements): void {
  const none = Object.entries(settlements).filter(([, by]) => !(by.settled > 0));
  if (none.length === 0) return;
  const names = none.map(([s]) => s).join(', ');
  throw new Error(
    `settle workload: NO reservation settled on ${names} (tollgate_settlements_total{outcome="settled"} is 0): the ext_proc streams were not settled, the settle rows measure nothing`,
  );
}
