/**
 * `tollgate cache purge --scope tenant=acme [--scope team=x] [--config tollgate.yaml] [--json]`: drop
 * every cached answer of one scope from Valkey (VALKEY_URL). The memory store's answers live in the
 * serving process only (they go with it, or expire).
 */
import type { Config } from '../config/types.js';
import { ValkeyAnswerStore } from '../store/answer-valkey.js';
import { scopeFromPairs } from './key.js';

export interface PurgeDeps {
  loadConfig: (file: string) => Config;
  valkeyUrl?: string;
  valkeyCaFile?: string;
  usage: (problem: string) => never;
  write: (text: string) => void;
}

export async function purgeCommand(args: string[], deps: PurgeDeps): Promise<number> {
  const pairs: string[] = [];
  let config: string | undefined;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--scope') pairs.push(args[++i] ?? deps.usage('--scope needs dim=value'));
    else if (a === '--config') config = args[++i] ?? deps.usage('--config needs a file');
    else if (a === '--json') json = true;
    else deps.usage(`unknown argument "${a}"`);
  }
  if (pairs.length === 0 && !args.includes('--scope'))
    deps.usage('cache purge needs --scope dim=value (or --scope global)');
  if (pairs.some((p) => p !== 'global' && !/^[a-z][a-z0-9_]*=.+$/.test(p)))
    deps.usage('--scope takes dim=value');
  if (!deps.valkeyUrl) deps.usage('cache purge needs VALKEY_URL (the memory store is per process)');
  const store0 = config ? deps.loadConfig(config).store : undefined;
  const prefix = store0?.prefix ?? 'tollgate';
  const scope = pairs.includes('global') ? { kind: 'global', id: 'global' } : scopeFromPairs(pairs);
  const store = new ValkeyAnswerStore(
    { url: deps.valkeyUrl!, caFile: deps.valkeyCaFile, timeoutMs: 2000 },
    prefix,
    store0?.topology === 'cluster',
  );
  try {
    if (!(await store.ready)) throw new Error('cannot reach Valkey (VALKEY_URL)');
    const r = await store.purge(scope.id);
    deps.write(
      json
        ? `${JSON.stringify({ scope: pairs.join(','), ...r })}\n`
        : `purged ${r.entries} cached answers (${r.bytes} bytes) of scope ${pairs.join(',')}\n`,
    );
    return 0;
  } finally {
    await store.close();
  }
}
