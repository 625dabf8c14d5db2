/**
 * The Valkey store on iovalkey (`store.client: iovalkey`) instead of tollgate's own RESP connection
 * (`store.client: resp`, the default, src/store/resp.ts). Same script, same arguments, same answers:
 * both pass test/store-conformance.test.ts. It exists so that topologies the hand-written connection
 * does not speak (Valkey Cluster, Sentinel) can use the library's clients; on a standalone server the
 * default connection is leaner (README, Performance: iovalkey on the check path promoted ~9 MB/s of
 * short-lived objects to V8's old generation).
 *
 * iovalkey's own auto-pipelining batches the EVALSHA calls of one event-loop turn into one write, as
 * the RESP connection does; its offline queue is off, so while disconnected a check fails at once and
 * the breaker decides, never a hidden queue.
 */
import { Valkey } from 'iovalkey';
import { withTimeout } from '../resilience/timeout.js';
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
import { type ValkeyStoreOptions, valkeyOptions } from './valkey.js';
import { checkWrote, ReplicaWait } from './wait.js';

export class IovalkeyStore implements Store {
  readonly kind = 'valkey' as const;
  readonly client: Valkey;
  private readonly script: Script = loadScript('check-limits');
  private readonly settleScript: Script = loadScript('settle-reservation');
  private readonly adjustScript: Script = loadScript('adjust-limit');
  private timeoutMs: number;
  /** See Store.lastReplyAt (set even when the reply comes after the call timed out). */
  lastReplyAt?: number;
  /** store.wait_replicas after each write (src/store/wait.ts). */
  private readonly wait: ReplicaWait;

  constructor(opts: ValkeyStoreOptions) {
    this.timeoutMs = opts.timeoutMs;
    this.wait = new ReplicaWait(opts.waitReplicas ?? 0, (args) =>
      this.client.call(...(args as [string, ...(string | number)[]])),
    );
    this.client = new Valkey({ ...valkeyOptions(opts), enableAutoPipelining: true });
    // Errors reach the calls that failed; an unhandled 'error' event must not crash the process.
    this.client.on('error', () => {});
  }

  setTimeoutMs(ms: number): void {
    this.timeoutMs = ms;
  }

  /** Connect (if not yet) and load the script; the returned SHA must equal ours. */
  async connect(): Promise<void> {
    if (this.client.status === 'wait') await this.client.connect();
    await this.loadScripts();
  }

  async loadScripts(): Promise<void> {
    for (const script of [this.script, this.settleScript]) {
      const sha = (await this.client.call('SCRIPT', 'LOAD', script.source)) as string;
      if (sha !== script.sha) throw new Error(`script SHA mismatch: server ${sha}, local ${script.sha}`);
    }
  }

  async streamLengths(keys: string[]): Promise<number[]> {
    return Promise.all(keys.map(async (k) => Number(await this.client.call('XLEN', k))));
  }

  async reservation(key: string): Promise<Reservation | undefined> {
    return parseReservation(await this.client.call('HMGET', key, ...RESERVATION_FIELDS));
  }

  /** An operator's credit or reset (lua/adjust-limit.lua), off the request path. */
  async adjust(req: AdjustRequest): Promise<AdjustResult> {
    const started = performance.now();
    const reply = (await evalScript(this.send, this.adjustScript, [req.key], adjustArgs(req))) as number[];
    if (this.wait.on) await this.wait.after(started, this.timeoutMs);
    return { remaining: Number(reply[0]), resetMs: Number(reply[1]), nowMs: Number(reply[2]) };
  }

  /** One command on this store's connection (scripts off the check path: settle, adjust). */
  private readonly send: SendCommand = (a) => this.client.call(...(a as [string, ...(string | number)[]]));

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

  check(plan: CheckPlan): Promise<CheckResult> {
    return withTimeout(this.evalCheck(plan), this.timeoutMs);
  }

  private async evalCheck(plan: CheckPlan): Promise<CheckResult> {
    const started = performance.now();
    const args: (string | number)[] = [this.script.sha, plan.keys.length, ...plan.keys, ...planArgs(plan)];
    let reply: number[];
    try {
      reply = (await this.client.call('EVALSHA', ...args)) as number[];
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      await this.loadScripts();
      reply = (await this.client.call('EVALSHA', ...args)) as number[];
    }
    this.lastReplyAt = Date.now();
    const result = parseReply(plan, reply);
    if (this.wait.on && checkWrote(result.outcome)) await this.wait.after(started, this.timeoutMs);
    return result;
  }

  async ping(): Promise<void> {
    if (this.client.status === 'wait') await this.client.connect();
    await this.client.ping();
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}
