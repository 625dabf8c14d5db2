/** The queue tier's part of a plan (keys, request) and the words for a refusal. */
import { randomUUID } from 'node:crypto';
import type { Config, QueueConfig } from '../config/types.js';
import { safeId } from '../identity/identity.js';
import { queueAcctKey, queueStreamKey } from '../store/keys.js';
import { QueueFullReason, type QueueRequest } from '../store/types.js';

/** The queue's stream, then its accounting hash: the last two keys of the plan. */
export function queueKeys(cfg: Config, q: QueueConfig): [string, string] {
  const stream = queueStreamKey(cfg.store.prefix, q.name, cfg.store.topology === 'cluster');
  return [stream, queueAcctKey(stream)];
}

export function queueRequest(
  q: QueueConfig,
  tenant: string,
  model: string,
  cost: number,
  body: string | Buffer,
): QueueRequest {
  return {
    name: q.name,
    maxLength: q.maxLength,
    maxBytes: q.maxBytes,
    tenantMaxEntries: q.tenantMaxEntries,
    tenantMaxBytes: q.tenantMaxBytes,
    tenantKey: safeId(tenant),
    id: randomUUID(),
    tenant,
    model,
    cost,
    body,
  };
}

/** Appended to the 429's message: which bound of which queue refused the call. */
export function queueFullText(name: string, reason: QueueFullReason | undefined): string {
  switch (reason) {
    case QueueFullReason.Bytes:
      return ` The overflow queue "${name}" is full (its byte budget, queues.${name}.max_bytes, is used up).`;
    case QueueFullReason.TenantEntries:
    case QueueFullReason.TenantBytes:
      return ` The overflow queue "${name}" is full for this caller (its share, queues.${name}.tenant_share, is used up).`;
    default:
      return ` The overflow queue "${name}" is full.`;
  }
}
