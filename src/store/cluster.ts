/**
 * The Valkey store on a Valkey Cluster (store.topology: cluster), on iovalkey's Cluster client:
 * slots discovered from the seed nodes of VALKEY_URL (`valkey://h1:7000,h2:7000`), MOVED and ASK
 * followed, the slot map refreshed on redirection and failover. Scripts are called by SHA on the node
 * owning their keys' slot, and sent whole (EVAL, which also caches them there) on NOSCRIPT: a node
 * added by resharding or promoted by a failover has never seen them.
 *
 * Checks: src/store/cluster-check.ts (one script call when the plan's keys share a slot, slot by slot
 * with compensation otherwise). Settlements: one script when the record and its limits share a slot;
 * otherwise the record is claimed (at most once) and each slot's limits settled after it. The usage
 * export stream lives in its own slot ({u.<name>}): its entry is written after a settlement applied.
 */
import { Cluster, type ClusterOptions } from 'iovalkey';
import { withTimeout } from '../resilience/timeout.js';
import {
  CLUSTER_SCRIPTS,
  type ClusterCheck,
  checkAcrossSlots,
  checkOneSlot,
  oneSlot,
  refundDebited,
} from './cluster-check.js';
import { settleAcrossSlots } from './cluster-settle.js';
import { defaultRetryDelayMs } from './resp.js';
import { loadScript, type Script } from './scripts.js';
import { parseReservation, parseSettleReply, RESERVATION_FIELDS, settleCall } from './settle-codec.js';
import { keySlot } from './slot.js';
import {
  type AdjustRequest,
  type AdjustResult,
  adjustArgs,
  type CheckPlan,
  type CheckResult,
  type Reservation,
  type SettleRequest,
  type SettleResult,
  type Store,
} from './types.js';
import { type ValkeyStoreOptions, valkeyTarget } from './valkey.js';

/** Seed nodes and the shared credentials/TLS/db of a cluster VALKEY_URL (several host:port, comma-separated). */
export function clusterSeeds(opts: ValkeyStoreOptions): {
  seeds: { host: string; port: number }[];
  url: string;
} {
  const m = /^([a-z]+:\/\/)(?:([^@/]*)@)?([^/]+)(\/.*)?$/i.exec(opts.url);
  if (!m) throw new Error('VALKEY_URL: expected scheme://[user:password@]host:port[,host:port…]');
  const seeds = m[3].split(',').map((hp) => {
    const u = new URL(`${m[1]}${hp}`);
    return { host: u.hostname || '127.0.0.1', port: u.port ? Number(u.port) : 6379 };
  });
  return { seeds, url: `${m[1]}${m[2] ? `${m[2]}@` : ''}${m[3].split(',')[0]}${m[4] ?? ''}` };
}

/** iovalkey Cluster options: fail fast while a slot has no reachable owner (the breaker decides). */
export function clusterOptions(opts: ValkeyStoreOptions, url: string): ClusterOptions {
  const { host: _h, port: _p, db, tls, ...auth } = valkeyTarget({ ...opts, url });
  if (db !== 0) throw new Error('VALKEY_URL: a Valkey Cluster has only database 0');
  return {
    redisOptions: {
      ...auth,
      // each node's certificate is checked against the address it is reached at (no fixed name)
      ...(tls ? { tls: tls.ca ? { ca: tls.ca } : {} } : {}),
      connectionName: 'tollgate',
      connectTimeout: 2000,
      commandTimeout: Math.max(1000, opts.timeoutMs * 20),
      maxRetriesPerRequest: 0,
    },
    // off: during a reshard iovalkey's auto-pipelining hands MOVED/ASK back to the caller instead of
    // following it (docs/cluster-clients.md; ioredis#2075); without it every redirection is followed
    enableAutoPipelining: false,
    enableOfflineQueue: false,
    lazyConnect: true,
    scaleReads: 'master',
    maxRedirections: 16,
    retryDelayOnMoved: 0,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2000,
    clusterRetryStrategy: defaultRetryDelayMs,
  };
}

/**
 * An iovalkey Cluster client on VALKEY_URL's seeds, as the store uses it (fail fast, no
 * auto-pipelining); the answer cache names its connections, the queue consumer waits offline.
 */
export function openCluster(
  opts: ValkeyStoreOptions,
  extra: { connectionName?: string; offlineQueue?: boolean } = {},
): Cluster {
  const { seeds, url } = clusterSeeds(opts);
  const o = clusterOptions(opts, url);
  if (extra.connectionName) o.redisOptions = { ...o.redisOptions, connectionName: extra.connectionName };
  if (extra.offlineQueue) {
    o.enableOfflineQueue = true;
    o.redisOptions = { ...o.redisOptions, commandTimeout: undefined };
  }
  return new Cluster(seeds, o);
}

export class ClusterStore implements Store {
  readonly kind = 'valkey' as const;
  readonly client: Cluster;
  private readonly settleScript: Script = loadScript('settle-reservation');
  private readonly adjustScript: Script = loadScript('adjust-limit');
  private timeoutMs: number;
  /** See Store.lastReplyAt. */
  lastReplyAt?: number;
  /** See Store.clusterStats. */
  readonly clusterStats = { spanning: 0, compensated: 0, exportLost: 0 };

  constructor(opts: ValkeyStoreOptions) {
    if (opts.waitReplicas)
      throw new Error('store.wait_replicas is not supported with store.topology: cluster');
    this.timeoutMs = opts.timeoutMs;
    this.client = openCluster(opts);
    // Errors reach the calls that failed; an unhandled 'error' event must not crash the process.
    this.client.on('error', () => {});
  }

  setTimeoutMs(ms: number): void {
    this.timeoutMs = ms;
  }

  async connect(): Promise<void> {
    if (this.client.status === 'wait') await this.client.connect();
    // every primary gets the scripts now (the first calls then need no EVAL); a node that joins later
    // gets each script on its first NOSCRIPT
    const scripts = [...Object.values(CLUSTER_SCRIPTS), this.settleScript, loadScript('settle-claim')];
    await Promise.all(
      this.client.nodes('master').flatMap((n) =>
        scripts.map(async (s) => {
          const sha = await n.call('SCRIPT', 'LOAD', s.source);
          if (sha !== s.sha) throw new Error(`script SHA mismatch: server ${sha}, local ${s.sha}`);
        }),
      ),
    );
  }

  /** Script commands defined on the client, one per script and key count (see `exec`). */
  private readonly defined = new Set<string>();

  /**
   * A script on the node owning its keys' slot: EVALSHA, and the whole script (EVAL, which that node
   * then keeps) on NOSCRIPT — iovalkey's defineCommand does both. One command per script and key
   * count, so its arguments start with the first key: iovalkey's auto-pipelining groups commands by
   * the slot of their first argument, which for a raw EVALSHA is the SHA (the batch would go to the
   * wrong node and come back MOVED).
   */
  private readonly exec = (script: Script, keys: string[], args: (string | number)[]): Promise<unknown> => {
    const name = `tollgate_${script.name.replace(/-/g, '_')}_${keys.length}`;
    if (!this.defined.has(name)) {
      this.client.defineCommand(name, { numberOfKeys: keys.length, lua: script.source });
      this.defined.add(name);
    }
    const run = (this.client as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[
      name
    ];
    return run.call(this.client, ...keys, ...args);
  };

  check(plan: CheckPlan): Promise<CheckResult> {
    return withTimeout(this.evalCheck(plan), this.timeoutMs);
  }

  private async evalCheck(plan: CheckPlan): Promise<CheckResult> {
    if (oneSlot(plan)) {
      const result = await checkOneSlot(plan, this.exec);
      this.lastReplyAt = Date.now();
      return result;
    }
    const r = plan.reservation;
    this.clusterStats.spanning++;
    const done: ClusterCheck = await checkAcrossSlots(plan, this.exec, r?.id ?? `x.${Math.random()}`);
    const { result, debited } = done;
    this.clusterStats.compensated += done.compensated;
    if (r && debited && result.chosen >= 0 && !plan.dryRun) {
      const rec = r.records[result.chosen];
      const args = [rec, r.id, JSON.stringify(debited), r.ttlMs];
      try {
        await this.exec(CLUSTER_SCRIPTS.putReservation, [plan.keys[r.key]], args);
      } catch (err) {
        // no record, no settlement: give every slot its part back before the call fails
        await refundDebited(debited, this.exec, r.id);
        throw err;
      }
    }
    this.lastReplyAt = Date.now();
    return result;
  }

  async reservation(key: string): Promise<Reservation | undefined> {
    return parseReservation(await this.client.call('HMGET', key, ...RESERVATION_FIELDS));
  }

  async settle(req: SettleRequest): Promise<SettleResult> {
    const slot = keySlot(req.key);
    const result = req.reservation.entries.every((e) => keySlot(e.key) === slot)
      ? await this.settleOneSlot(req)
      : await settleAcrossSlots(req, this.exec);
    const x = req.export;
    if (x && result.outcome === 'settled') {
      // the export stream has its own slot: written once the settlement applied (never for a
      // duplicate); a failed write loses that entry, not the settlement
      await this.client.call('XADD', x.stream, 'MAXLEN', '~', x.maxLength, '*', ...x.fields).catch(() => {
        this.clusterStats.exportLost++;
      });
    }
    return result;
  }

  private async settleOneSlot(req: SettleRequest): Promise<SettleResult> {
    const { keys, args } = settleCall({ ...req, export: undefined });
    return parseSettleReply(await this.exec(this.settleScript, keys, args));
  }

  async adjust(req: AdjustRequest): Promise<AdjustResult> {
    const reply = (await this.exec(this.adjustScript, [req.key], adjustArgs(req))) as number[];
    return { remaining: Number(reply[0]), resetMs: Number(reply[1]), nowMs: Number(reply[2]) };
  }

  async streamLengths(keys: string[]): Promise<number[]> {
    return Promise.all(keys.map(async (k) => Number(await this.client.call('XLEN', k))));
  }

  async ping(): Promise<void> {
    if (this.client.status === 'wait') await this.client.connect();
    await this.client.call('PING');
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}
