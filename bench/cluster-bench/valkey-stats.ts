/**
 * What the Valkey side did in a run: INFO commandstats of each primary (script calls and every
 * command), and the script calls tollgate sent, captured with MONITOR and grouped by class.
 */
import { Valkey } from 'iovalkey';
import { loadScript } from '../../src/store/scripts.js';
import type { Backend, Captured } from './common.js';

const SCRIPT_NAMES = new Map(
  ['check-limits', 'reservation-put', 'settle-entries', 'queue-enqueue'].map((n) => [loadScript(n).sha, n]),
);
const SCRIPT_COMMANDS = ['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro'];

export async function commandStats(c: Valkey): Promise<Record<string, number>> {
  const info = await c.info('commandstats');
  const calls: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1]] = Number(m[2]);
  return calls;
}

export const scriptCalls = (c: Record<string, number>) =>
  SCRIPT_COMMANDS.reduce((n, k) => n + (c[k] ?? 0), 0);
/** Commands tollgate sent (the bench's own INFO calls left out). */
export const allCalls = (c: Record<string, number>) =>
  Object.entries(c).reduce((n, [k, v]) => (k === 'info' || k === 'config|resetstat' ? n : n + v), 0);

export function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) > 0) out[k] = v - (a[k] ?? 0);
  return out;
}

/** MONITOR quotes arguments C-style (iovalkey undoes only \\"). */
function unescapeMonitor(a: string): string {
  return a.replace(/\\(x[0-9a-fA-F]{2}|[nrtab\\])/g, (_m, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(Number.parseInt(e.slice(1), 16));
    return ({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b', '\\': '\\' } as Record<string, string>)[e];
  });
}

/** MONITOR every primary until `stop()`; script calls grouped by class, one sample call each. */
export async function captureScripts(b: Backend) {
  const classes = new Map<string, Captured>();
  const mons: Array<{ disconnect(): void }> = [];
  for (const n of b.nodes.filter((x) => x.role === 'primary')) {
    const c = new Valkey({ port: n.port, lazyConnect: true });
    c.on('error', () => {});
    const m = await c.monitor();
    m.on('monitor', (_time: string, args: string[]) => {
      const cmd = String(args[0]).toLowerCase();
      // EVAL is the once-per-node NOSCRIPT fallback; the steady state is EVALSHA
      if (cmd !== 'evalsha') return;
      const name = SCRIPT_NAMES.get(String(args[1])) ?? String(args[1]).slice(0, 8);
      const nk = Number(args[2]);
      const keys = args.slice(3, 3 + nk);
      const global = Boolean(b.cluster) && keys.length > 0 && keys.every((k) => !k.includes('{'));
      const cls = `${name}, ${nk} key${nk === 1 ? '' : 's'}${global ? ' (global limit)' : ''}`;
      const got = classes.get(cls);
      if (got) got.count++;
      else classes.set(cls, { port: n.port, argv: args.map((a) => unescapeMonitor(String(a))), count: 1 });
    });
    mons.push(m, c);
  }
  return {
    stop: () => {
      for (const m of mons) m.disconnect();
      return classes;
    },
  };
}
