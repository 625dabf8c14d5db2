/**
 * Queue tier consumer (example and library). Contract:
 *   stream   <prefix>:q:<queue>     fields: id, tenant, model, cost, enqueued_at, body
 *   group    XGROUP CREATE <stream> <group> 0 MKSTREAM   (created on start if missing)
 *   read     XREADGROUP GROUP <group> <consumer> COUNT n BLOCK ms STREAMS <stream> >
 *   ack      lua/queue-release.lua: XACK, XDEL and the release of the entry's bytes and its tenant's
 *            share from <stream>:acct, in one atomic step, at most once per entry (tollgate counts
 *            XLEN and those bytes; an entry removed without it keeps its bytes counted until the
 *            queue is empty)
 *   retry    entries pending longer than --min-idle are reclaimed with XAUTOCLAIM and handled again
 *            (a consumer that crashed mid-entry leaves it pending: still counted, reclaimed later);
 *            after --max-deliveries attempts an entry moves to <stream>:dead (bounded by
 *            --dead-max entries, oldest trimmed) and is released, in the same atomic step.
 */
import { spawn } from 'node:child_process';
import { type Cluster, Valkey } from 'iovalkey';
import { openCluster } from '../store/cluster.js';
import { queueAcctKey, queueDeadKey, queueStreamKey } from '../store/keys.js';
import { loadScript } from '../store/scripts.js';
import { type SentinelTarget, valkeyOptions } from '../store/valkey.js';

export interface QueueEntry {
  streamId: string;
  id: string;
  tenant: string;
  model: string;
  cost: number;
  enqueuedAt: number;
  body: string;
  deliveries: number;
}

export interface ConsumerOptions {
  url: string;
  /** The sentinels that name the primary (VALKEY_SENTINELS, …); `url` then gives credentials only. */
  sentinel?: SentinelTarget;
  /** store.topology: cluster: `url` names seed nodes; the queue's keys share the slot {q.<queue>}. */
  cluster?: boolean;
  prefix?: string;
  queue: string;
  group: string;
  consumer: string;
  count?: number;
  blockMs?: number;
  minIdleMs?: number;
  maxDeliveries?: number;
  /** Dead-letter stream bound (entries; the oldest are trimmed past it). Default 1000. */
  deadMax?: number;
}

const release = loadScript('queue-release');

function toEntry(streamId: string, fields: string[], deliveries: number): QueueEntry {
  const f: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) f[fields[i]] = fields[i + 1];
  return {
    streamId,
    id: f.id,
    tenant: f.tenant,
    model: f.model,
    cost: Number(f.cost),
    enqueuedAt: Number(f.enqueued_at),
    body: f.body,
    deliveries,
  };
}

export class QueueConsumer {
  readonly client: Valkey | Cluster;
  readonly stream: string;

  constructor(private readonly o: ConsumerOptions) {
    if (o.cluster) {
      this.client = openCluster({ url: o.url, timeoutMs: 5000 }, { offlineQueue: true });
    } else
      this.client = new Valkey({
        ...valkeyOptions({ url: o.url, timeoutMs: 5000, sentinel: o.sentinel }),
        enableOfflineQueue: true,
        commandTimeout: undefined,
      });
    this.stream = queueStreamKey(o.prefix ?? 'tollgate', o.queue, o.cluster);
  }

  async init(): Promise<void> {
    await this.client.connect();
    try {
      await this.client.xgroup('CREATE', this.stream, this.o.group, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  /** Next batch: reclaimed stale entries first, then new ones. */
  async next(): Promise<QueueEntry[]> {
    const out: QueueEntry[] = [];
    const claimed = (await this.client.xautoclaim(
      this.stream,
      this.o.group,
      this.o.consumer,
      this.o.minIdleMs ?? 60_000,
      '0-0',
      'COUNT',
      this.o.count ?? 10,
    )) as [string, [string, string[]][]];
    for (const [sid, fields] of claimed[1] ?? []) {
      if (!fields) continue;
      const pending = (await this.client.xpending(this.stream, this.o.group, sid, sid, 1)) as [
        string,
        string,
        number,
        number,
      ][];
      const deliveries = pending[0]?.[3] ?? 1;
      out.push(toEntry(sid, fields, deliveries));
    }
    if (out.length > 0) return out;
    const res = (await this.client.xreadgroup(
      'GROUP',
      this.o.group,
      this.o.consumer,
      'COUNT',
      this.o.count ?? 10,
      'BLOCK',
      this.o.blockMs ?? 1000,
      'STREAMS',
      this.stream,
      '>',
    )) as [string, [string, string[]][]][] | null;
    for (const [, entries] of res ?? [])
      for (const [sid, fields] of entries) out.push(toEntry(sid, fields, 1));
    return out;
  }

  /** Done with an entry: acknowledge and delete it, releasing its bytes (frees queue capacity). */
  async ack(e: QueueEntry): Promise<boolean> {
    return this.release(e, 'ack');
  }

  /** Give up on an entry: copy it to <stream>:dead, then acknowledge, delete and release it. */
  async deadLetter(e: QueueEntry): Promise<boolean> {
    return this.release(e, 'dead');
  }

  /** True when this call removed the entry (false: another consumer or an earlier try already did). */
  private async release(e: QueueEntry, mode: 'ack' | 'dead'): Promise<boolean> {
    const keys = [this.stream, queueAcctKey(this.stream), queueDeadKey(this.stream)];
    const args = [this.o.group, e.streamId, mode, String(this.o.deadMax ?? 1000)];
    let r: unknown;
    try {
      r = await this.client.evalsha(release.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      r = await this.client.eval(release.source, keys.length, ...keys, ...args);
    }
    return r === 1;
  }

  close(): void {
    this.client.disconnect();
  }
}

/** Run `cmd` with the entry's JSON on stdin; resolves true on exit code 0. */
function runHandler(cmd: string, e: QueueEntry): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn('sh', ['-c', cmd], { stdio: ['pipe', 'inherit', 'inherit'] });
    p.on('error', () => resolve(false));
    p.on('exit', (code) => resolve(code === 0));
    p.stdin.end(JSON.stringify(e));
  });
}

/**
 * Example consumer loop: with --exec, each entry is piped (as JSON) to the command and acked when it
 * exits 0; without, entries are printed as JSON lines and acked.
 */
export async function consumeLoop(
  o: ConsumerOptions & { exec?: string; once?: boolean },
  out = process.stdout,
): Promise<number> {
  const c = new QueueConsumer(o);
  await c.init();
  let handled = 0;
  let stop = false;
  process.once('SIGTERM', () => {
    stop = true;
  });
  process.once('SIGINT', () => {
    stop = true;
  });
  try {
    while (!stop) {
      const batch = await c.next();
      for (const e of batch) {
        if (e.deliveries > (o.maxDeliveries ?? 5)) {
          await c.deadLetter(e);
          continue;
        }
        const ok = o.exec ? await runHandler(o.exec, e) : out.write(`${JSON.stringify(e)}\n`) || true;
        if (ok) {
          await c.ack(e);
          handled++;
        }
      }
      if (o.once && batch.length === 0) break;
    }
  } finally {
    c.close();
  }
  return handled;
}
