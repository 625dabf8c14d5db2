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
 *                                               or settle.reservation_ttl
 *   <prefix>:u:<usage_stream.name>              the usage export stream (settle.usage_stream)
 * Scope parts are safe ids (identity/safeId): they cannot collide or escape the prefix.
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
};

/** A queue's stream key. */
export function queueStreamKey(storePrefix: string, queue: string): string {
  return `${storePrefix}:q:${queue}`;
}

/** A queue's accounting hash (bytes, per-tenant entries and bytes). */
export function queueAcctKey(stream: string): string {
  return `${stream}:acct`;
}

/** A queue's dead-letter stream. */
export function queueDeadKey(stream: string): string {
  return `${stream}:dead`;
}

/** A reservation record's key. */
export function reservationKey(storePrefix: string, id: string): string {
  return `${storePrefix}:v:${id}`;
}

/** The usage export stream (settle.usage_stream). */
export function usageStreamKey(storePrefix: string, name: string): string {
  return `${storePrefix}:u:${name}`;
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
