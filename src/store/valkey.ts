/**
 * Valkey store: one connection, the check script called by SHA, reloaded on NOSCRIPT. Checks issued in
 * one turn of the event loop go out together (one pipeline, one write), and a batch never waits for
 * the one before it (see `flush`).
 */
import { readFileSync } from 'node:fs';
import { type RedisOptions, Valkey } from 'iovalkey';
import { withTimeout } from '../resilience/timeout.js';
import { loadScript, type Script } from './scripts.js';
import { type CheckPlan, type CheckResult, parseReply, planArgs, type Store } from './types.js';

interface Pending {
  argv: (string | number)[];
  resolve: (reply: unknown) => void;
  reject: (err: unknown) => void;
}

/** iovalkey's evalsha typed for one flat argument array (its Command flattens one level). */
interface EvalSha {
  evalsha(args: (string | number)[]): Promise<unknown>;
}

export interface ValkeyStoreOptions {
  url: string;
  /** Per-command timeout (ms). */
  timeoutMs: number;
  /** PEM CA bundle for TLS (valkeys:// / rediss://). */
  caFile?: string;
}

/** valkey://, valkeys://, redis://, rediss:// (user:password@host:port/db) → iovalkey options. */
export function valkeyOptions(opts: ValkeyStoreOptions): RedisOptions {
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
    connectionName: 'tollgate',
    // Batching is ours (ValkeyStore.flush): iovalkey's auto-pipelining keeps one batch in flight at a
    // time, so under load every check waited for the previous batch's round trip.
    enableAutoPipelining: false,
    // Fail fast while disconnected: the breaker, not a hidden queue, decides what happens.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    // Safety net only: our own timeout (below) answers first; this one frees commands stuck on a hung server.
    commandTimeout: Math.max(1000, opts.timeoutMs * 20),
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    lazyConnect: true,
  };
}

export class ValkeyStore implements Store {
  readonly kind = 'valkey' as const;
  readonly client: Valkey;
  private readonly script: Script = loadScript('check-limits');

  private timeoutMs: number;
  /** See Store.lastReplyAt (set even when the reply comes after the call timed out). */
  lastReplyAt?: number;
  /** EVALSHA calls of this turn of the event loop, sent by `flush`. */
  private batch: Pending[] = [];
  private flushScheduled = false;

  /** Per-call timeout (config reload). */
  setTimeoutMs(ms: number): void {
    this.timeoutMs = ms;
  }

  constructor(opts: ValkeyStoreOptions) {
    this.timeoutMs = opts.timeoutMs;
    this.client = new Valkey(valkeyOptions(opts));
    // errors surface through command failures and the breaker; avoid unhandled 'error' events
    this.client.on('error', () => {});
  }

  /** Connect (if not yet) and load the script; the returned SHA must equal ours. */
  async connect(): Promise<void> {
    if (this.client.status === 'wait') await this.client.connect();
    await this.loadScripts();
  }

  async loadScripts(): Promise<void> {
    const sha = (await this.client.script('LOAD', this.script.source)) as string;
    if (sha !== this.script.sha)
      throw new Error(`script SHA mismatch: server ${sha}, local ${this.script.sha}`);
  }

  /** The check, bounded by the per-call timeout (event-loop-aware, see resilience/timeout.ts). */
  check(plan: CheckPlan): Promise<CheckResult> {
    return withTimeout(this.evalCheck(plan), this.timeoutMs);
  }

  private async evalCheck(plan: CheckPlan): Promise<CheckResult> {
    // One flat argument array (sha, numkeys, keys…, argv…) passed as a single argument (iovalkey's
    // Command flattens one level): no spread copies per call; reused on NOSCRIPT.
    const argv: (string | number)[] = [this.script.sha, plan.keys.length];
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
    return parseReply(plan, reply);
  }

  /** Queue one EVALSHA (sha, numkeys, keys…, args… as one array) for this turn's batch. */
  private evalsha(argv: (string | number)[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.batch.push({ argv, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // setImmediate, not nextTick: checks started by other I/O events of the same poll phase join.
        setImmediate(this.flush);
      }
    });
  }

  /**
   * Send this turn's checks: one alone as a plain command, several as one pipeline (one write). Unlike
   * iovalkey's auto-pipelining, a batch does not wait for the previous batch's replies; replies come
   * back in order on the one connection either way.
   */
  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 1) {
      const c = batch[0];
      (this.client as unknown as EvalSha).evalsha(c.argv).then(c.resolve, c.reject);
      return;
    }
    const p = this.client.pipeline();
    for (const c of batch) (p as unknown as EvalSha).evalsha(c.argv);
    p.exec().then(
      (results) => {
        for (let i = 0; i < batch.length; i++) {
          const r = results?.[i];
          if (!r) batch[i].reject(new Error('valkey pipeline: no reply'));
          else if (r[0]) batch[i].reject(r[0]);
          else batch[i].resolve(r[1]);
        }
      },
      (err) => {
        for (const c of batch) c.reject(err);
      },
    );
  };

  async ping(): Promise<void> {
    await this.client.ping();
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}
