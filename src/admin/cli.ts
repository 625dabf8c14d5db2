/**
 * `tollgate usage | credit | reset`: the admin API from a shell. Straight to the store (VALKEY_URL, as
 * `tollgate check` does; with --config for the limits), or through a running tollgate's admin listener
 * with `--admin http://127.0.0.1:PORT` and TOLLGATE_ADMIN_TOKEN.
 *
 *   tollgate usage  --config f.yaml --scope tenant=acme [--scope team=x] [--model m] [--json]
 *   tollgate credit --config f.yaml --limit l --scope tenant=acme --amount 200 [--json]
 *   tollgate reset  --config f.yaml --limit l --scope tenant=acme [--json]
 */
import type { Config } from '../config/types.js';
import type { Store } from '../store/types.js';
import { type AdjustReport, adjustLimit, type Scope, type UsageReport, usageOf } from './usage.js';

export type AdminCommand = 'usage' | 'credit' | 'reset';

export interface AdminCliDeps {
  /** The config file when --config is not given. */
  configFile: string;
  loadConfig(file: string): Config;
  /** The store the CLI talks to directly (Valkey from VALKEY_URL, else memory). */
  openStore(cfg: Config): Promise<Store>;
  /** TOLLGATE_ADMIN_TOKEN ('' = unset). */
  token: string;
  /** A usage error (exit 2). */
  usage(problem: string): never;
  write(text: string): void;
}

interface AdminArgs {
  file?: string;
  admin?: string;
  scope: Scope;
  model?: string;
  limit?: string;
  amount?: string;
  json: boolean;
}

function parse(cmd: AdminCommand, args: string[], deps: AdminCliDeps): AdminArgs {
  const out: AdminArgs = { scope: {}, json: false };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--json') {
      out.json = true;
      continue;
    }
    const v = args[++i];
    if (v === undefined) deps.usage(`${a} needs a value`);
    if (a === '--config') out.file = v;
    else if (a === '--admin') out.admin = v.replace(/\/+$/, '');
    else if (a === '--model' && cmd === 'usage') out.model = v;
    else if (a === '--limit' && cmd !== 'usage') out.limit = v;
    else if (a === '--amount' && cmd === 'credit') out.amount = v;
    else if (a === '--scope')
      for (const part of v.split(',')) {
        const m = /^\s*([^=\s]+)\s*=\s*(.*?)\s*$/.exec(part);
        if (!m) deps.usage(`--scope expects dimension=value, got "${part}"`);
        out.scope[m[1]] = m[2];
      }
    else deps.usage(`unknown option ${a} for ${cmd}`);
  }
  if (cmd !== 'usage' && !out.limit) deps.usage(`${cmd} needs --limit <name>`);
  if (cmd === 'credit' && out.amount === undefined) deps.usage('credit needs --amount <units>');
  if (out.admin && !deps.token) deps.usage('--admin needs TOLLGATE_ADMIN_TOKEN in the environment');
  return out;
}

/** Through the admin listener: the JSON it answers, or its error message. */
async function viaAdmin(cmd: AdminCommand, a: AdminArgs, token: string): Promise<unknown> {
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  let res: Response;
  if (cmd === 'usage') {
    const q = new URLSearchParams(a.scope);
    if (a.model) q.set('model', a.model);
    res = await fetch(`${a.admin}/v1/usage?${q}`, { headers });
  } else {
    const body: Record<string, unknown> = { limit: a.limit, scope: a.scope };
    if (cmd === 'credit') body.amount = Number(a.amount);
    res = await fetch(`${a.admin}/${cmd === 'credit' ? 'v1/credits' : 'v1/reset'}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
    });
  }
  const json = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
  if (!res.ok) throw new Error(`admin API answered ${res.status}: ${json.error?.message ?? res.statusText}`);
  return json;
}

/** Run one admin command; returns the exit code (0 done, 1 refused or failed). */
export async function adminCommand(cmd: AdminCommand, args: string[], deps: AdminCliDeps): Promise<number> {
  const a = parse(cmd, args, deps);
  let result: unknown;
  if (a.admin) result = await viaAdmin(cmd, a, deps.token);
  else {
    const cfg = deps.loadConfig(a.file ?? deps.configFile);
    const store = await deps.openStore(cfg);
    try {
      if (cmd === 'usage') result = await usageOf(cfg, store, a.scope, a.model);
      else result = await adjustLimit(cfg, store, cmd, { limit: a.limit, scope: a.scope, amount: a.amount });
    } finally {
      await store.close();
    }
  }
  if (a.json) deps.write(`${JSON.stringify(result, null, 2)}\n`);
  else
    deps.write(
      cmd === 'usage' ? describeUsage(result as UsageReport) : describeAdjust(result as AdjustReport),
    );
  return 0;
}

const scopeText = (s: Scope) =>
  Object.entries(s)
    .map(([k, v]) => `${k}=${v}`)
    .join(',') || 'global';
const when = (epochS: number) => new Date(epochS * 1000).toISOString().replace('.000Z', 'Z');

function windowText(w: Record<string, string | number>): string {
  if (w.type === 'rolling') return `rolling ${Number(w.every_ms) / 1000}s`;
  if (w.type === 'concurrent') return `in flight (lease ${Number(w.lease_ms) / 1000}s)`;
  return `${w.reset} (${w.timezone})`;
}

function describeUsage(r: UsageReport): string {
  const head = [
    `scope: ${scopeText(r.scope)}`,
    `model: ${r.model ?? '(every configured model)'}`,
    `store: ${r.store}`,
  ];
  const rows = [['LIMIT', 'WINDOW', 'SCOPE', 'USED', 'CAPACITY', 'REMAINING', 'UNIT', 'RESETS']];
  for (const l of r.limits)
    rows.push([
      l.shadow ? `${l.limit} (shadow)` : l.limit,
      windowText(l.window),
      scopeText(l.scope),
      String(l.used),
      String(l.capacity),
      String(l.remaining),
      l.unit,
      when(l.reset),
    ]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const table = rows.map((row) =>
    row
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
  if (r.limits.length === 0) table.push('(no limit applies to this scope)');
  return `${head.join('  ')}\n${table.join('\n')}\n`;
}

function describeAdjust(r: AdjustReport): string {
  const what = r.op === 'credit' ? `credited ${r.units} ${r.unit}` : 'reset to full';
  return `${r.limit} (${scopeText(r.scope)}): ${what}; remaining ${r.remaining} of ${r.capacity} ${r.unit}; resets ${when(r.reset)}\n`;
}
