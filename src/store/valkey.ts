/**
 * Valkey store: one connection (src/store/resp.ts), the check script called by SHA, reloaded on
 * NOSCRIPT. Checks issued in one turn of the event loop go out together (one write), and a batch never
 * waits for the one before it (see `flush`).
 */
import { readFileSync } from 'node:fs';
import type { RedisOptions } from 'iovalkey';
import { withTimeout } from '../resilience/timeout.js';
import { defaultRetryDelayMs, type RespCommand, RespConnection, type RespValue } from './resp.js';
import { evalScript, loadScript, type Script, type SendCommand } from './scripts.js';
import { parseReservation, parseSettleReply, RESERVATION_FIELDS, settleCall } from './settle-codec.js';
import {
  type AdjustRequest,
  type AdjustResult,
  adjustArgs,
  type CheckPlan,
  type CheckResult,
  parseReply,
  planArgs,
  type Reservation,
  type SettleRequest,
  type SettleResult,
  type Store,
} from './types.js';
import { checkWrote, ReplicaWait } from './wait.js';

export interface ValkeyStoreOptions {
  url: string;
  /** Per-command timeout (ms). */
  timeoutMs: number;
  /** PEM CA bundle for TLS (valkeys:// / rediss://). */
  caFile?: string;
  /**
   * store.topology: sentinel: the primary is the one these sentinels name; `url` then gives only the
   * scheme (TLS), user:password and db (its host and port are not used). iovalkey only.
   */
  sentinel?: SentinelTarget;
  /** store.wait_replicas (src/store/wait.ts); 0 or unset = no WAIT. */
  waitReplicas?: number;
}

/** The sentinels to ask, the primary's name there, and the sentinels' own password (VALKEY_SENTINEL_*). */
export interface SentinelTarget {
  sentinels: { host: string; port: number }[];
  name: string;
  password?: string;
}

/** Where and how to connect, from valkey://, valkeys://, redis://, rediss:// (user:password@host:port/db). */
export interface ValkeyTarget {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
  tls?: { servername: string; ca?: Buffer };
}

export function valkeyTarget(opts: ValkeyStoreOptions): ValkeyTarget {
  const u = new URL(opts.url);
  const tls = u.protocol === 'valkeys:' || u.protocol === 'rediss:';
  if (!['valkey:', 'valkeys:', 'redis:', 'rediss:'].includes(u.protocol)) {
    throw new Error(
      `VALKEY_URL: unsupported scheme "${u.protocol}" (use valkey://, valkeys://, redis:// or rediss://)`,
    );
  }
  const db = u.pathname && u.pathname !== '/' ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: Number.isInteger(db) ? db : 0,
    tls: tls
      ? { servername: u.hostname, ...(opts.caFile ? { ca: readFileSync(opts.caFile) } : {}) }
      : undefined,
  };
}

/** The same target as iovalkey options (the queue consumer's client); through the sentinels when set. */
export function valkeyOptions(opts: ValkeyStoreOptions): RedisOptions {
  return {
    ...(opts.sentinel ? sentinelOptions(opts, opts.sentinel) : valkeyTarget(opts)),
    connectionName: 'tollgate',
    enableAutoPipelining: false,
    // Fail fast while disconnected: the breaker, not a hidden queue, decides what happens.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: replyTimeoutMs(opts.timeoutMs),
    connectTimeout: 2000,
    retryStrategy: defaultRetryDelayMs,
    lazyConnect: true,
  };
}

/**
 * iovalkey's Sentinel connector: ask the sentinels for `name`'s primary, connect to it with the URL's
 * credentials, db and TLS (the sentinels too when the URL is valkeys://). On a failover it reconnects
 * to the new primary: at once when the sentinels announce +switch-master (failoverDetector), when the
 * old primary, now a replica, answers a write with READONLY, or when the connection drops.
 */
function sentinelOptions(opts: ValkeyStoreOptions, s: SentinelTarget): RedisOptions {
  const { host: _h, port: _p, tls, ...auth } = valkeyTarget(opts);
  return {
    ...auth,
    sentinels: s.sentinels,
    name: s.name,
    role: 'master',
    sentinelPassword: s.password,
    ...(tls ? { tls: { ca: tls.ca }, enableTLSForSentinelMode: true, sentinelTLS: { ca: tls.ca } } : {}),
    failoverDetector: true,
    sentinelRetryStrategy: (n: number) => Math.min(100 * n, 1000),
    reconnectOnError: (err: Error) => (err.message.startsWith('READONLY') ? 1 : false),
  };
}

/**
 * Safety net only: the per-call timeout answers the check first; this one frees commands stuck on a
 * hung server (and is when the breaker counts a silent store's timeouts, see resilience/breaker.ts).
 */
const replyTimeoutMs = (timeoutMs: number) => Math.max(1000, timeoutMs * 20);

export class ValkeyStore implements Store {
  readonly kind = 'valkey' as const;
  readonly conn: RespConnection;
  private readonly script: Script = loadScript('check-limits');
  private readonly settleScript: Script = loadScript('settle-reservation');
  private readonly adjustScript: Script = loadScript('adjust-limit');

  private timeoutMs: number;
  /** See Store.lastReplyAt (set even when the reply comes after the call timed out). */
  lastReplyAt?: number;
  /** store.wait_replicas after each write (src/store/wait.ts). */
  private readonly wait: ReplicaWait;
  /** EVALSHA calls of this turn of the event loop, sent by `flush`. */
  private batch: RespCommand[] = [];
  private flushScheduled = false;

  /** Per-call timeout (config reload). */
  setTimeoutMs(ms: number): void {
    this.timeoutMs = ms;
  }

  constructor(opts: ValkeyStoreOptions) {
    this.timeoutMs = opts.timeoutMs;
    if (opts.sentinel) throw new Error('store.client: resp cannot follow a Sentinel failover; use iovalkey');
    this.wait = new ReplicaWait(opts.waitReplicas ?? 0, (args) => this.conn.command(args));
    this.conn = new RespConnection({
      ...valkeyTarget(opts),
      name: 'tollgate',
      connectTimeoutMs: 2000,
      replyTimeoutMs: replyTimeoutMs(opts.timeoutMs),
    });
  }

  /** Connect (if not yet) and load the script; the returned SHA must equal ours. */
  async connect(): Promise<void> {
    await this.conn.connect();
    await this.loadScripts();
  }

  async loadScripts(): Promise<void> {
    for (const script of [this.script, this.settleScript]) {
      const sha = (await this.conn.command(['SCRIPT', 'LOAD', script.source])) as string;
      if (sha !== script.sha) throw new Error(`script SHA mismatch: server ${sha}, local ${script.sha}`);
    }
  }

  async streamLengths(keys: string[]): Promise<number[]> {
    return Promise.all(keys.map(async (k) => Number(await this.conn.command(['XLEN', k]))));
  }

  /** The response phase is off the request path: its calls go out at once, bounded by the reply timeout. */
  async reservation(key: string): Promise<Reservation | undefined> {
    return parseReservation(await this.conn.command(['HMGET', key, ...RESERVATION_FIELDS]));
  }

  /** An operator's credit or reset (lua/adjust-limit.lua), off the request path. */
  async adjust(req: AdjustRequest): Promise<AdjustResult> {
    const started = performance.now();
    const reply = (await evalScript(this.send, this.adjustScript, [req.key], adjustArgs(req))) as number[];
    if (this.wait.on) await this.wait.after(started, this.timeoutMs);
    return { remaining: Number(reply[0]), resetMs: Number(reply[1]), nowMs: Number(reply[2]) };
  }

  /** One command on this store's connection (scripts off the check path: settle, adjust). */
  private readonly send: SendCommand = (a) => this.conn.command(a);

  /** See Store.waitShort. */
  get waitShort(): number {
    return this.wait.short;
  }

  async settle(req: SettleRequest): Promise<SettleResult> {
    const started = performance.now();
    const result = await this.settleOnce(req);
    if (this.wait.on) await this.wait.after(started, this.timeoutMs);
    return result;
  }

  private async settleOnce(req: SettleRequest): Promise<SettleResult> {
    const { keys, args } = settleCall(req);
    return parseSettleReply(await evalScript(this.send, this.settleScript, keys, args));
  }

  /**
   * The check, bounded by the per-call timeout on the connection's silence and by `budgetAt` while the
   * server is still answering (event-loop-aware, see resilience/timeout.ts).
   */
  check(plan: CheckPlan, budgetAt?: number): Promise<CheckResult> {
    return withTimeout(this.evalCheck(plan), this.timeoutMs, this.progress, budgetAt);
  }

  private readonly progress = (): number => this.conn.lastReplyAt;

  /** See Store.progressAt. */
  get progressAt(): number {
    return this.conn.lastReplyAt;
  }

  private async evalCheck(plan: CheckPlan): Promise<CheckResult> {
    const started = performance.now();
    // One flat argument array (EVALSHA sha numkeys keys… args…), reused on NOSCRIPT.
    const argv: (string | number)[] = ['EVALSHA', this.script.sha, plan.keys.length];
    for (const k of plan.keys) argv.push(k);
    for (const a of planArgs(plan)) argv.push(a);
    let reply: number[];
    try {
      reply = (await this.evalsha(argv)) as number[];
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      await this.loadScripts();
      reply = (await this.evalsha(argv)) as number[];
    }
    this.lastReplyAt = Date.now();
    const result = parseReply(plan, reply);
    if (this.wait.on && checkWrote(result.outcome)) await this.wait.after(started, this.timeoutMs);
    return result;
  }

  /** Queue one EVALSHA (the whole command as one array) for this turn's batch. */
  private evalsha(args: (string | number)[]): Promise<RespValue> {
    return new Promise((resolve, reject) => {
      this.batch.push({ args, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // setImmediate, not nextTick: checks started by other I/O events of the same poll phase join.
        setImmediate(this.flush);
      }
    });
  }

  /**
   * Send this turn's checks as one write. A batch does not wait for the previous batch's replies;
   * replies come back in order on the one connection.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.batch;
    this.batch = [];
    this.conn.send(batch);
  };

  async ping(): Promise<void> {
    await this.conn.connect();
    await this.conn.command(['PING']);
  }

  async close(): Promise<void> {
    this.conn.close();
  }
}
