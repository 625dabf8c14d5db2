#!/usr/bin/env node
/**
 * tollgate-queue --queue <name> [--group tollgate] [--consumer <name>] [--exec "<command>"] [--once]
 *   [--min-idle 60000] [--max-deliveries 5] [--dead-max 1000] [--prefix tollgate] [--cluster]
 *   (VALKEY_URL names the server; or VALKEY_SENTINELS and VALKEY_SENTINEL_NAME its sentinels;
 *   --cluster: VALKEY_URL names seed nodes of a Valkey Cluster, as with store.topology: cluster)
 */
import { hostname } from 'node:os';
import { settings } from '../settings.js';
import { consumeLoop } from './consumer.js';

const args = process.argv.slice(2);
const opt = (name: string, def?: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const queue = opt('queue');
const sentinel = settings().valkeySentinel;
const url = settings().valkeyUrl ?? (sentinel ? 'valkey://sentinel-primary' : undefined);
if (!queue || !url) {
  process.stderr.write(
    'usage: VALKEY_URL=valkey://host:6379 tollgate-queue --queue <name> [--group g] [--consumer c] [--exec cmd] [--once] [--cluster]\n',
  );
  process.exit(2);
}
const handled = await consumeLoop({
  url,
  sentinel,
  cluster: args.includes('--cluster'),
  queue,
  prefix: opt('prefix', 'tollgate'),
  group: opt('group', 'tollgate')!,
  consumer: opt('consumer', `${hostname()}-${process.pid}`)!,
  exec: opt('exec'),
  once: args.includes('--once'),
  minIdleMs: Number(opt('min-idle', '60000')),
  maxDeliveries: Number(opt('max-deliveries', '5')),
  deadMax: Number(opt('dead-max', '1000')),
});
process.stderr.write(`handled ${handled} entries\n`);
process.exit(0);
