#!/usr/bin/env node
/**
 * tollgate [serve]                       run the ext_authz server (the default)
 * tollgate validate <config>             check a config file; exit 0 when valid, 1 otherwise
 * tollgate check --config <file> --body <request.json> [--path /v1/chat/completions] [--method POST]
 *                [--header k=v]... [--json]
 *                                        dry-run one decision against the store (VALKEY_URL, else a
 *                                        fresh in-memory store); debits nothing; prints the decision
 *                                        and its headers; exit 0 allow, 3 deny, 1 error
 * tollgate usage|credit|reset ...         the admin API from a shell (src/admin/cli.ts): straight to
 *                                        VALKEY_URL, or to a running admin listener with --admin
 * tollgate replay --config <candidate> <calls.jsonl> [--compare <current>] [--json]
 *                                        what-if: recorded calls through a config on the in-memory
 *                                        store at simulated time (src/ops/replay.ts)
 * Exit 2: usage error.
 */
import { readFileSync } from 'node:fs';
import { configPath, loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import type { Decision } from './decision/types.js';
import { ConfigError } from './errors.js';
import { settings } from './settings.js';
import type { CheckPlan, Store } from './store/types.js';

const USAGE = `usage:
  tollgate [serve]                                   run the server (config: TOLLGATE_CONFIG or ./tollgate.yaml)
  tollgate validate <config.yaml>                    exit 0 if valid, 1 with every problem listed
  tollgate check --config <file> --body <request.json> [--path <path>] [--method <method>]
                 [--header k=v]... [--json]         dry-run one decision (VALKEY_URL or in-memory);
                                                     exit 0 allow, 3 deny, 1 error
  tollgate usage  --config <file> --scope dim=value [--model <m>] [--json]
                                                     every limit that applies, with what is left
  tollgate credit --config <file> --limit <name> --scope dim=value --amount <n> [--json]
                                                     top up the current window (usd: in dollars)
  tollgate reset  --config <file> --limit <name> --scope dim=value [--json]
                                                     refill a scope's limit to full
                 (usage/credit/reset: VALKEY_URL, or --admin http://127.0.0.1:PORT with
                  TOLLGATE_ADMIN_TOKEN instead of --config)
  tollgate replay --config <candidate.yaml> <calls.jsonl> [--compare <current.yaml>] [--json]
                                                     what-if: replay recorded calls (in-memory, simulated
                                                     time); per limit: denied, rerouted, would queue
  tollgate cache purge --scope dim=value [--scope dim=value]... [--config <file>] [--json]
                                                     drop a scope's cached answers (VALKEY_URL)
`;

class UsageError extends Error {}

function usage(problem?: string): never {
  throw new UsageError(problem ?? 'missing arguments');
}

async function serve(): Promise<void> {
  const { createLogger } = await import('./ops/log.js');
  const log = createLogger();
  const file = configPath();
  let config: Config;
  try {
    config = loadConfig(file);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'cannot start: configuration invalid');
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 1; // let the async log line drain, then exit
    return;
  }
  const { startApp } = await import('./app.js'); // gRPC, metrics: only `serve` pays for loading them
  let app: Awaited<ReturnType<typeof startApp>>;
  try {
    app = await startApp({
      config,
      configFile: file,
      watchConfig: true,
      valkeyUrl: settings().valkeyUrl,
      valkeyCaFile: settings().valkeyCaFile,
      valkeySentinel: settings().valkeySentinel,
      logger: log,
    });
  } catch (err) {
    // e.g. a port already in use: exit at once (the store connection, workers or a listener that did
    // start must not keep a half-started sidecar alive)
    log.fatal({ err: (err as Error).message }, 'cannot start');
    process.stderr.write(`tollgate: ${(err as Error).message}\n`);
    log.flush();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 50).unref();
    return;
  }
  process.on('SIGHUP', () => {
    log.info({ signal: 'SIGHUP' }, 'reloading configuration');
    app.reload();
  });
  const grace = settings().shutdownGraceMs;
  const stop = async (sig: string) => {
    log.info({ signal: sig, grace_ms: grace }, 'shutting down: draining in-flight checks');
    let code = 0;
    try {
      await app.close(grace);
      log.info('stopped');
    } catch (err) {
      code = 1;
      log.error({ err: (err as Error).message }, 'shutdown failed');
    }
    log.flush();
    setTimeout(() => process.exit(code), 50).unref();
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

function validate(file: string | undefined): void {
  if (!file) usage('validate needs a config file');
  try {
    const cfg = loadConfig(file);
    process.stdout.write(`${file}: valid (${cfg.models.size} models, ${cfg.limits.length} limits)\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

/** The URL without its password, for messages. */
function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<unparseable VALKEY_URL>';
  }
}

interface CheckArgs {
  file: string;
  bodyFile: string;
  path: string;
  method: string;
  asJson: boolean;
  headers: Record<string, string>;
}

function checkArgs(args: string[]): CheckArgs {
  let file = configPath();
  let bodyFile: string | undefined;
  let path = '/v1/chat/completions';
  let method = 'POST';
  let asJson = false;
  const headers: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--json') {
      asJson = true;
      continue;
    }
    const v = args[++i];
    if (v === undefined) usage(`${a} needs a value`);
    if (a === '--config') file = v;
    else if (a === '--body') bodyFile = v;
    else if (a === '--path') path = v;
    else if (a === '--method') method = v.toUpperCase();
    else if (a === '--header') {
      const m = /^([^=:\s]+)\s*[=:]\s*(.*)$/.exec(v);
      if (!m) usage(`--header expects name=value, got "${v}"`);
      headers[m[1].toLowerCase()] = m[2];
    } else usage(`unknown option ${a}`);
  }
  if (!bodyFile) usage('check needs --body <request.json>');
  return { file, bodyFile, path, method, asJson, headers };
}

type StoreModules = [typeof import('./store/memory.js'), typeof import('./store/connect.js')];

/** Valkey when VALKEY_URL is set (it must answer), else a fresh in-memory store. */
async function cliStore(cfg: Config, [{ MemoryStore }, { createValkeyStore }]: StoreModules): Promise<Store> {
  const address = settings();
  if (!address.valkeyUrl && !address.valkeySentinel) return new MemoryStore();
  const vs = createValkeyStore(cfg.store, address, 2000);
  const where = address.valkeySentinel
    ? `the sentinels' primary "${address.valkeySentinel.name}"`
    : safeUrl(address.valkeyUrl ?? '');
  try {
    await vs.connect();
  } catch (err) {
    await vs.close();
    throw new Error(`cannot reach Valkey at ${where}: ${(err as Error).message}`);
  }
  return vs;
}

/** Dry run: the store decides against the live state but debits nothing. */
function dryRun(store: Store): Store {
  return {
    kind: store.kind,
    ping: () => store.ping(),
    close: () => store.close(),
    check: (p: CheckPlan) => store.check({ ...p, dryRun: true }),
    reservation: async () => undefined,
    settle: async () => ({ outcome: 'missing', remaining: [] }),
  };
}

async function check(args: string[]): Promise<void> {
  const { file, bodyFile, path, method, asJson, headers } = checkArgs(args);
  // Loaded here so that `validate` starts fast (no tokenizer, no Valkey client).
  const [{ Decider }, { toCheckResponse }, memory, connect] = await Promise.all([
    import('./decision/decide.js'),
    import('./authz/grpc/translate.js'),
    import('./store/memory.js'),
    import('./store/connect.js'),
  ]);
  const cfg = loadConfig(file);
  let body: Buffer;
  try {
    body = readFileSync(bodyFile);
  } catch (err) {
    throw new Error(`cannot read --body ${bodyFile}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  headers['content-length'] ??= String(body.length);
  headers['content-type'] ??= 'application/json';
  const store = await cliStore(cfg, [memory, connect]);
  // A one-off CLI call may wait for a cold connection: do not let the serving deadlines turn a slow
  // first answer into a "degraded" decision.
  cfg.store.timeoutMs = 2000;
  cfg.server.decisionDeadlineMs = 5000;
  cfg.server.overloadBudgetMs = 15_000;
  const decider = new Decider(cfg, { store: dryRun(store) });
  let d: Decision;
  try {
    d = await decider.decide({ method, path, headers, body });
  } finally {
    await decider.close();
    await store.close();
  }
  const response = toCheckResponse(d);
  if (asJson) process.stdout.write(`${JSON.stringify({ decision: d, check_response: response }, null, 2)}\n`);
  else process.stdout.write(describe(d, store.kind));
  process.exitCode = d.kind === 'allow' ? 0 : 3;
}

async function admin(cmd: 'usage' | 'credit' | 'reset', args: string[]): Promise<void> {
  const [{ adminCommand }, memory, connect] = await Promise.all([
    import('./admin/cli.js'),
    import('./store/memory.js'),
    import('./store/connect.js'),
  ]);
  process.exitCode = await adminCommand(cmd, args, {
    configFile: configPath(),
    loadConfig,
    openStore: (cfg) => cliStore(cfg, [memory, connect]),
    token: settings().adminToken,
    usage,
    write: (text) => process.stdout.write(text),
  });
}

async function replayCommand(args: string[]): Promise<void> {
  let file = configPath();
  let compare: string | undefined;
  let callsFile: string | undefined;
  let asJson = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--json') asJson = true;
    else if (a === '--config' || a === '--compare') {
      const v = args[++i];
      if (v === undefined) usage(`${a} needs a value`);
      if (a === '--config') file = v;
      else compare = v;
    } else if (a.startsWith('--')) usage(`unknown option ${a} for replay`);
    else if (callsFile) usage('replay takes one calls file');
    else callsFile = a;
  }
  if (!callsFile) usage('replay needs a calls file (JSON Lines)');
  const { replay, parseCalls, formatReplay } = await import('./ops/replay.js');
  let text: string;
  try {
    text = readFileSync(callsFile, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${callsFile}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  const calls = parseCalls(text);
  const runs = [];
  for (const f of compare ? [file, compare] : [file])
    runs.push({ config: f, report: await replay(loadConfig(f), calls) });
  if (asJson)
    process.stdout.write(
      `${JSON.stringify({ runs: runs.map((r) => ({ config: r.config, ...r.report })) }, null, 2)}\n`,
    );
  else process.stdout.write(formatReplay(runs));
}

async function purge(args: string[]): Promise<void> {
  const { purgeCommand } = await import('./cache/purge.js');
  const { valkeyUrl, valkeyCaFile } = settings();
  const write = (text: string) => process.stdout.write(text);
  process.exitCode = await purgeCommand(args, { loadConfig, valkeyUrl, valkeyCaFile, usage, write });
}

function describe(d: Decision, storeKind: string): string {
  const s = d.stats;
  const lines: string[] = [];
  lines.push(
    d.kind === 'allow'
      ? `decision: ALLOW (${d.reason})`
      : `decision: DENY (${d.reason}) HTTP ${d.httpStatus}`,
  );
  if (s.model)
    lines.push(
      `model: ${s.model}${s.chosenModel && s.chosenModel !== s.model ? ` -> ${s.chosenModel}` : ''}`,
    );
  if (s.tenantTag) lines.push(`tenant: ${s.tenantTag} (hash)`);
  if (s.promptTokens !== undefined)
    lines.push(
      `tokens: prompt ${s.promptTokens}${s.estimated ? ' (estimated)' : ''}, reserved output ${s.reservedTokens ?? 0}`,
    );
  if (s.micros !== undefined) lines.push(`cost: $${(s.micros / 1e6).toFixed(6)}`);
  if (s.limit) lines.push(`limit: ${s.limit}`);
  lines.push(`store: ${storeKind} (dry run: nothing debited)`);
  const block = (title: string, h: Record<string, string>) => {
    const entries = Object.entries(h);
    if (!entries.length) return;
    lines.push('', `${title}:`);
    for (const [k, v] of entries) lines.push(`  ${k}: ${v}`);
  };
  if (d.kind === 'allow') {
    block('headers to upstream', d.upstreamHeaders);
    block('headers to the client', d.responseHeaders);
    if (d.removeHeaders.length) lines.push('', `headers removed: ${d.removeHeaders.join(', ')}`);
  } else {
    block('response headers', d.headers);
    lines.push('', 'response body:', `  ${d.body}`);
  }
  return `${lines.join('\n')}\n`;
}

const [cmd = 'serve', ...rest] = process.argv.slice(2);
try {
  if (cmd === 'serve') await serve();
  else if (cmd === 'validate') validate(rest[0]);
  else if (cmd === 'check') await check(rest);
  else if (cmd === 'usage' || cmd === 'credit' || cmd === 'reset') await admin(cmd, rest);
  else if (cmd === 'replay') await replayCommand(rest);
  else if (cmd === 'cache' && rest[0] === 'purge') await purge(rest.slice(1));
  else if (cmd === 'help' || cmd === '--help' || cmd === '-h') process.stdout.write(USAGE);
  else usage(`unknown command "${cmd}"`);
} catch (err) {
  if (err instanceof UsageError) {
    process.stderr.write(`tollgate: ${err.message}\n${USAGE}`);
    process.exitCode = 2;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`tollgate: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
