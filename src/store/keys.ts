/**
 * Every Valkey key name tollgate uses, in one place (the store owns its key space; policy decides which
 * limits apply and is handed these names, src/policy/plan-types.ts KeyNames).
 *
 *   <prefix>:r:<limit>:<scope…>                 rolling limit (token bucket)
 *   <prefix>:c:<limit>:<unit>[@<zone>]:<scope…> calendar quota: changing `reset` or `timezone` starts a
 *                                               new window at once instead of running out the old one
 *   <prefix>:q:<queue>                          a queue's stream
 *   <prefix>:q:<queue>:acct                     its byte and per-tenant accounting (lua/queue-release.lua)
 *   <prefix>:q:<queue>:dead                     its dead letters
 *   <prefix>:s:<limit>:<scope…>                 concurrency limit: the reservation ids holding a slot
 *   <prefix>:v:<reservation id>                 a reservation record (lua/check-limits.lua), until settled
 *                                               or settle.reservation_ttl; an id made for a cluster
 *                                               (`<slot tag>:<id>`) names `<prefix>:v:{<slot tag>}:<id>`,
 *                                               in the slot of the call's first limit key
 *   <prefix>:v:{<slot tag>}:settled:<rest>      cluster: a slot's done-mark for a settlement spanning
 *                                               slots (lua/settle-entries.lua; 2 minutes)
 *   <prefix>:u:<usage_stream.name>              the usage export stream (settle.usage_stream)
 * Scope parts are safe ids (identity/safeId): they cannot collide or escape the prefix. With
 * `store.shard_by: <dimension>`, that dimension's part is written `{<value>}`: a Valkey Cluster hash
 * tag, so every key of one caller's value shares a slot (src/store/slot.ts). With store.topology:
 * cluster, a queue's keys share the tag `{q.<queue>}` and the usage stream `{u.<name>}`.
 */
import type { LimitConfig } from '../config/types.js';
import type { KeyNames } from '../policy/plan-types.js';

export const keyNames: KeyNames = {
  limitPrefix(storePrefix: string, l: Pick<LimitConfig, 'name' | 'window'>): string {
    const w = l.window;
    const kindPart =
      w.type === 'rolling'
        ? `r:${l.name}`
        : w.type === 'concurrent'
          ? `s:${l.name}`
          : `c:${l.name}:${w.unit}${w.timezone ? `@${w.timezone.replace(/[^A-Za-z0-9_-]/g, '_')}` : ''}`;
    return `${storePrefix}:${kindPart}`;
  },
  shardPart(part: string): string {
    return `{${part}}`;
  },
};

/** A queue's stream key; on a cluster its accounting and dead letters share its slot. */
export function queueStreamKey(storePrefix: string, queue: string, cluster = false): string {
  return cluster ? `${storePrefix}:q:{q.${queue}}` : `${storePrefix}:q:${queue}`;
}

/** A queue's accounting hash (bytes, per-tenant entries and bytes). */
export function queueAcctKey(stream: string): string {
  return `${stream}:acct`;
}

/** A queue's dead-letter stream. */
export function queueDeadKey(stream: string): string {
  return `${stream}:dead`;
}

/** A reservation record's key: an id `<slot tag>:<rest>` (cluster) puts it in that tag's slot. */
export function reservationKey(storePrefix: string, id: string): string {
  const colon = id.indexOf(':');
  return colon < 0
    ? `${storePrefix}:v:${id}`
    : `${storePrefix}:v:{${id.slice(0, colon)}}:${id.slice(colon + 1)}`;
}

/** The usage export stream (settle.usage_stream); on a cluster, in its own slot. */
export function usageStreamKey(storePrefix: string, name: string, cluster = false): string {
  return cluster ? `${storePrefix}:u:{u.${name}}` : `${storePrefix}:u:${name}`;
}

/**
 * The answer cache (src/cache/, lua/cache-put.lua, lua/cache-purge.lua):
 *   <prefix>:a:e:<scope id>:<hash>   one answer (its bytes), with its TTL
 *   <prefix>:a:idx                   every answer: member "<scope id> <hash> <bytes> <scope kind>",
 *                                    score its expiry (ms): expired first, then oldest, evicted first
 *   <prefix>:a:z:<scope id>          one scope's answers (same members)
 *   <prefix>:a:acct                  bytes held: s:<scope id>, k:<scope kind>, total
 *   <prefix>:a:v:<scope id>:<family>:<bucket>  the semantic tier's vectors of one scope, prompt family
 *                                    and LSH bucket: member <hash hex><float32 bytes>, score expiry
 *   <prefix>:a:vk:<scope id>         that scope's vector keys (for purge), score expiry
 * Scope ids are `<kind>.<hex>` (cache/key.ts scopeOf), hashes hex: they cannot escape the prefix.
 */
export const answerKeys = {
  entryPrefix: (storePrefix: string) => `${storePrefix}:a:e:`,
  entry: (storePrefix: string, scope: string, hash: string) => `${storePrefix}:a:e:${scope}:${hash}`,
  index: (storePrefix: string) => `${storePrefix}:a:idx`,
  scopeIndexPrefix: (storePrefix: string) => `${storePrefix}:a:z:`,
  scopeIndex: (storePrefix: string, scope: string) => `${storePrefix}:a:z:${scope}`,
  acct: (storePrefix: string) => `${storePrefix}:a:acct`,
  vectorKeys: (storePrefix: string, scope: string) => `${storePrefix}:a:vk:${scope}`,
  vectors: (storePrefix: string, scope: string, family: string, bucket: number) =>
    `${storePrefix}:a:v:${scope}:${family}:${bucket}`,
};
