#!/usr/bin/env node
/**
 * tollgate serve                         run the ext_authz server (default)
 * tollgate validate <config>             check a config file; exit 0 when valid, 1 otherwise
 * tollgate check --config <file> --body <request.json> [--path /v1/chat/completions] [--header k=v]...
 *                                        dry-run one decision (debits nothing) and print it
 */
import { readFileSync } from 'node:fs';
import { startApp } from './app.js';
import { configPath, loadConfig } from './config/load.js';
import { Decider } from './decision/decide.js';
import { ConfigError } from './errors.js';
import { toCheckResponse } from './grpc/translate.js';
import { createLogger } from './log.js';
import { MemoryStore } from './store/memory.js';
import type { CheckPlan, Store } from './store/types.js';
import { ValkeyStore } from './store/valkey.js';

function usage(): never {
  process.stderr.write(
    'usage:\n  tollgate serve\n  tollgate validate <config.yaml>\n  tollgate check --config <file> --body <request.json> [--path <path>] [--header k=v]...\n',
  );
  process.exit(2);
}

async function serve(): Promise<void> {
  const log = createLogger();
  const file = configPath();
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(file);
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'cannot start: configuration invalid');
    process.stderr.write(`${(err as Error).message}\n`);
    log.flush();
    process.exit(1);
  }
  const app = await startApp({
    config,
    configFile: file,
    watchConfig: true,
    valkeyUrl: process.env.VALKEY_URL || undefined,
    valkeyCaFile: process.env.VALKEY_CA_FILE || undefined,
    logger: log,
  });
  process.on('SIGHUP', () => app.reload());
  const stop = async (sig: string) => {
    log.info({ signal: sig }, 'shutting down: draining in-flight checks');
    await app.close(Number(process.env.TOLLGATE_SHUTDOWN_GRACE_MS || 10_000));
    log.info('stopped');
    log.flush();
    setTimeout(() => process.exit(0), 50).unref();
  };
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
}

function validate(file: string | undefined): void {
  if (!file) usage();
  try {
    const cfg = loadConfig(file);
    process.stdout.write(`${file}: valid (${cfg.models.size} models, ${cfg.limits.length} limits)\n`);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
}

async function check(args: string[]): Promise<void> {
  let file = configPath();
  let bodyFile: string | undefined;
  let path = '/v1/chat/completions';
  const headers: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const v = args[++i];
    if (v === undefined) usage();
    if (a === '--config') file = v;
    else if (a === '--body') bodyFile = v;
    else if (a === '--path') path = v;
    else if (a === '--header') {
      const eq = v.indexOf('=');
      if (eq <= 0) usage();
      headers[v.slice(0, eq).toLowerCase()] = v.slice(eq + 1);
    } else usage();
  }
  if (!bodyFile) usage();
  const cfg = loadConfig(file);
  const body = readFileSync(bodyFile);
  headers['content-length'] ??= String(body.length);
  let store: Store = new MemoryStore();
  if (process.env.VALKEY_URL) {
    const vs = new ValkeyStore({ url: process.env.VALKEY_URL, timeoutMs: 2000 });
    await vs.connect();
    store = vs;
  }
  // Dry run: the store decides but debits nothing.
  const dry: Store = {
    kind: store.kind,
    ping: () => store.ping(),
    close: () => store.close(),
    check: (p: CheckPlan) => store.check({ ...p, dryRun: true }),
  };
  const decider = new Decider(cfg, { store: dry });
  const d = await decider.decide({ method: 'POST', path, headers, body });
  process.stdout.write(`${JSON.stringify({ decision: d, check_response: toCheckResponse(d) }, null, 2)}\n`);
  await decider.close();
  await store.close();
  process.exit(d.kind === 'allow' ? 0 : 3);
}

const [cmd = 'serve', ...rest] = process.argv.slice(2);
try {
  if (cmd === 'serve') await serve();
  else if (cmd === 'validate') validate(rest[0]);
  else if (cmd === 'check') await check(rest);
  else usage();
} catch (err) {
  process.stderr.write(`${err instanceof ConfigError ? err.message : (err as Error).stack}\n`);
  process.exit(1);
}
