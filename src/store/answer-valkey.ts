/**
 * The answer cache on Valkey: shared by every replica. Its own iovalkey connection (binary-safe
 * values, off the check script's connection): a lookup is one HMGET (an answer is a hash of one
 * field, v: the ACL needs no command beyond the check and settle scripts'), a fill one EVALSHA of
 * lua/cache-put.lua (bytes bounded per scope and in total, atomically), a purge lua/cache-purge.lua.
 * Key names: store/keys.ts answerKeys. On a Valkey Cluster (store.topology: cluster) every answer key
 * carries the hash tag {a}: the cache's indexes and accounting are read and written together by its
 * scripts, so the whole cache lives in one slot (one primary holds it).
 */
import { type Cluster, Valkey } from 'iovalkey';
import {
  type AnswerPut,
  type AnswerPutResult,
  type AnswerStore,
  HASH_CHARS,
  type StoredVector,
  VALKEY_ENTRY_OVERHEAD,
  type VectorPut,
} from './answers.js';
import { openCluster } from './cluster.js';
import { answerKeys } from './keys.js';
import { loadScript, type Script } from './scripts.js';
import { type ValkeyStoreOptions, valkeyOptions } from './valkey.js';

export class ValkeyAnswerStore implements AnswerStore {
  readonly kind = 'valkey' as const;
  readonly client: Valkey | Cluster;
  /** Resolves once the first connection attempt is over (true: connected). Calls before it miss. */
  readonly ready: Promise<boolean>;
  private readonly putScript: Script = loadScript('cache-put');
  private readonly purgeScript: Script = loadScript('cache-purge');

  private readonly prefix: string;

  constructor(opts: ValkeyStoreOptions, prefix: string, cluster = false) {
    this.prefix = cluster ? `${prefix}:{a}` : prefix;
    if (cluster) {
      this.client = openCluster(opts, { connectionName: 'tollgate-cache' });
    } else this.client = new Valkey({ ...valkeyOptions(opts), connectionName: 'tollgate-cache' });
    this.client.on('error', () => {}); // reconnects by itself; a failed call falls through (a miss)
    this.ready = this.client.connect().then(
      () => true,
      () => false,
    );
  }

  async get(scope: string, hash: string): Promise<Buffer | undefined> {
    const [v] = await this.client.hmgetBuffer(answerKeys.entry(this.prefix, scope, hash), 'v');
    return v ?? undefined;
  }

  async put(p: AnswerPut): Promise<AnswerPutResult> {
    const P = this.prefix;
    const size = p.value.byteLength + VALKEY_ENTRY_OVERHEAD;
    const member = `${p.scope} ${p.hash} ${size} ${p.kind}`;
    const keys = [
      answerKeys.entry(P, p.scope, p.hash),
      answerKeys.index(P),
      answerKeys.scopeIndex(P, p.scope),
      answerKeys.acct(P),
    ];
    const args: (string | number | Buffer)[] = [
      member,
      size,
      p.ttlMs,
      Date.now(),
      p.scopeMaxBytes,
      p.maxBytes,
      p.value,
      answerKeys.entryPrefix(P),
      answerKeys.scopeIndexPrefix(P),
      p.scope,
      p.kind,
    ];
    const r = Number(await this.eval(this.putScript, keys, args));
    return r === 1 ? 'stored' : r === 0 ? 'exists' : 'full';
  }

  /**
   * One ZADD (score: expiry), the bucket's TTL pushed out, its expired members dropped; the bucket's
   * key listed under its scope (for purge).
   */
  async addVector(v: VectorPut): Promise<void> {
    const key = answerKeys.vectors(this.prefix, v.scope, v.family, v.bucket);
    const list = answerKeys.vectorKeys(this.prefix, v.scope);
    const now = Date.now();
    // a pipeline, not MULTI: the ACL allows these commands and nothing more is needed
    await this.client
      .pipeline()
      .zadd(key, now + v.ttlMs, Buffer.concat([Buffer.from(v.hash), v.vec]))
      .zremrangebyscore(key, '-inf', now)
      .pexpire(key, v.ttlMs)
      .zadd(list, now + v.ttlMs, key)
      .zremrangebyscore(list, '-inf', now)
      .pexpire(list, v.ttlMs)
      .exec();
  }

  /** Empty a scope's vector buckets (an emptied sorted set is gone). */
  private async purgeVectors(scope: string): Promise<void> {
    const list = answerKeys.vectorKeys(this.prefix, scope);
    const keys = await this.client.zrange(list, 0, -1);
    const p = this.client.pipeline();
    for (const k of keys) p.zremrangebyscore(k, '-inf', '+inf');
    p.zremrangebyscore(list, '-inf', '+inf');
    await p.exec();
  }

  /** The newest `limit` live members of each bucket, in one pipeline. */
  async vectors(scope: string, family: string, buckets: number[], limit: number): Promise<StoredVector[]> {
    const p = this.client.pipeline();
    const now = Date.now();
    for (const b of buckets)
      p.zrangeBuffer(
        answerKeys.vectors(this.prefix, scope, family, b),
        '+inf',
        now,
        'BYSCORE',
        'REV',
        'LIMIT',
        0,
        limit,
      );
    const replies = (await p.exec()) ?? [];
    const out: StoredVector[] = [];
    for (const [err, members] of replies) {
      if (err || !Array.isArray(members)) continue;
      for (const m of members as Buffer[])
        if (m.byteLength > HASH_CHARS)
          out.push({ hash: m.subarray(0, HASH_CHARS).toString('latin1'), vec: m.subarray(HASH_CHARS) });
    }
    return out;
  }

  async purge(scope: string): Promise<{ entries: number; bytes: number }> {
    const P = this.prefix;
    const keys = [answerKeys.scopeIndex(P, scope), answerKeys.index(P), answerKeys.acct(P)];
    let entries = 0;
    let bytes = 0;
    for (;;) {
      const [n, b] = (await this.eval(this.purgeScript, keys, [answerKeys.entryPrefix(P)])) as number[];
      entries += Number(n);
      bytes += Number(b);
      if (Number(n) === 0) {
        await this.purgeVectors(scope);
        return { entries, bytes };
      }
    }
  }

  async bytesByKind(kinds: string[]): Promise<Record<string, number>> {
    if (kinds.length === 0) return {};
    const vals = await this.client.hmget(answerKeys.acct(this.prefix), ...kinds.map((k) => `k:${k}`));
    const out: Record<string, number> = {};
    kinds.forEach((k, i) => {
      out[k] = Math.max(0, Number(vals[i] ?? 0));
    });
    return out;
  }

  private async eval(s: Script, keys: string[], args: (string | number | Buffer)[]): Promise<unknown> {
    try {
      return await this.client.evalsha(s.sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      // the whole script, which the node (the one owning these keys, on a cluster) then keeps
      return await this.client.eval(s.source, keys.length, ...keys, ...args);
    }
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}
