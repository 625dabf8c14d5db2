/**
 * store.topology: cluster without a cluster: the config and environment rules, key slots against
 * Valkey's own CLUSTER KEYSLOT answers (known vectors), slot tags, the hash tags store.shard_by puts in
 * key names, and reservation ids that name their record's slot.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { clusterReservationId, reservationIdTime } from '../src/decision/reservation.js';
import { buildPlan } from '../src/policy/plan.js';
import { clusterOptions, clusterSeeds } from '../src/store/cluster.js';
import { storeOptions } from '../src/store/connect.js';
import { keyNames, queueStreamKey, reservationKey, usageStreamKey } from '../src/store/keys.js';
import { keySlot, keySlotTag, slotTag } from '../src/store/slot.js';

const limits = `
identity:
  tenant: [{ header: x-tenant-id }]
  team: [{ header: x-team-id }]
limits:
  - { name: t, per: tenant, requests: 10, every: 1m }
  - { name: tt, per: [tenant, model], tokens: 1000, reset: daily }
  - { name: team, per: team, requests: 100, every: 1m }
  - { name: all, requests: 1000, every: 1m }
`;

describe('store.topology: cluster: configuration', () => {
  it('defaults to iovalkey, reads shard_by, refuses resp, wait_replicas and an unknown dimension', () => {
    const s = parseConfigText(`store: { topology: cluster, shard_by: tenant }\n${limits}`).store;
    expect([s.topology, s.client, s.shardBy]).toEqual(['cluster', 'iovalkey', 'tenant']);
    expect(() => parseConfigText(`store: { topology: cluster, client: resp }\n${limits}`)).toThrow(
      /store\.client: resp does not speak Valkey Cluster/,
    );
    expect(() => parseConfigText(`store: { topology: cluster, wait_replicas: 1 }\n${limits}`)).toThrow(
      /store\.wait_replicas is not supported with store\.topology: cluster/,
    );
    expect(() => parseConfigText(`store: { topology: cluster, shard_by: org }\n${limits}`)).toThrow(
      /store\.shard_by: expected an identity dimension \(tenant, team\), got "org"/,
    );
  });

  it('the topology and VALKEY_URL must agree; seeds, credentials and TLS come from one URL', () => {
    const st = { topology: 'cluster' as const, waitReplicas: 0 };
    expect(() => storeOptions(st, {}, 25)).toThrow(/needs VALKEY_URL naming one or more seed nodes/);
    expect(() =>
      storeOptions({ topology: 'standalone', waitReplicas: 0 }, { valkeyUrl: 'valkey://a:1,b:2' }, 25),
    ).toThrow(/names several nodes: set store.topology: cluster/);
    const { seeds, url } = clusterSeeds({ url: 'valkeys://u:p%40w@h1:7000,h2,[::1]:7002', timeoutMs: 25 });
    expect(seeds).toEqual([
      { host: 'h1', port: 7000 },
      { host: 'h2', port: 6379 },
      { host: '[::1]', port: 7002 },
    ]);
    const o = clusterOptions({ url: 'valkeys://u:p%40w@h1:7000,h2', timeoutMs: 25 }, url);
    expect(o.redisOptions).toMatchObject({ username: 'u', password: 'p@w', tls: {} });
    expect(o.redisOptions?.tls).not.toHaveProperty('servername'); // each node checked by its own address
    expect(o.enableOfflineQueue).toBe(false);
    expect(o.enableAutoPipelining).toBe(false);
    expect(() => clusterOptions({ url: 'valkey://h1:7000/2', timeoutMs: 25 }, 'valkey://h1:7000/2')).toThrow(
      /only database 0/,
    );
  });
});

describe('key slots and hash tags', () => {
  it('keySlot agrees with the cluster specification (CRC16/XMODEM mod 16384, hash tags)', () => {
    // values Valkey's CLUSTER KEYSLOT answers
    expect(keySlot('123456789')).toBe(12739);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('bar')).toBe(5061);
    expect(keySlot('{user1000}.following')).toBe(keySlot('user1000'));
    expect(keySlot('foo{}{bar}')).toBe(keySlot('foo{}{bar}')); // empty tag: the whole key
    expect(keySlot('foo{}{bar}')).not.toBe(keySlot('bar'));
    expect(keySlot('foo{{bar}}zap')).toBe(keySlot('{bar'));
    expect(keySlot('tollgate:r:req:{acme}')).toBe(keySlot('acme'));
  });

  it('every slot has a tag of at most 4 characters that hashes to it', () => {
    let longest = 0;
    for (let s = 0; s < 16384; s++) {
      const t = slotTag(s);
      expect(t).toMatch(/^[0-9a-z]{1,4}$/);
      expect(keySlot(`x:{${t}}:y`)).toBe(s);
      longest = Math.max(longest, t.length);
    }
    expect(longest).toBeLessThanOrEqual(4);
  });

  it('shard_by puts the dimension in braces in every key of a limit keyed by it, nowhere else', () => {
    const cfg = parseConfigText(`store: { topology: cluster, shard_by: tenant }\n${limits}`);
    const c = cfg.models.get('*') ?? cfg.defaultModel;
    const id = { tenant: 'acme', team: 'red' };
    const cand = [{ model: 'm', config: c, promptTokens: 1, outputTokens: 1, micros: 0 }];
    const { plan } = buildPlan(cfg, id, cand, keyNames);
    expect(plan.keys).toEqual([
      'tollgate:r:t:{acme}',
      expect.stringMatching(/^tollgate:c:tt:daily:\{acme\}:~/), // "*" as a safe id
      'tollgate:r:team:red',
      'tollgate:r:all',
    ]);
    expect(new Set(plan.keys.slice(0, 2).map(keySlot)).size).toBe(1);
    const plain = buildPlan(parseConfigText(limits), id, cand, keyNames).plan.keys;
    expect(plain[0]).toBe('tollgate:r:t:acme');
    // a tenant value cannot choose or break the tag: braces are not safe id characters (hashed)
    const forged = buildPlan(cfg, { tenant: 'x}{victim', team: 'red' }, cand, keyNames).plan.keys;
    expect(forged[0]).toMatch(/^tollgate:r:t:\{~[A-Za-z0-9_-]+\}$/);
    expect(keySlot(forged[0])).not.toBe(keySlot('victim'));
  });

  it('a cluster reservation id names its record slot; queue and usage streams have their own tags', () => {
    const id = clusterReservationId('tollgate:r:t:{acme}', 1_800_000_000_000);
    expect(id).toMatch(/^[0-9a-z]{1,4}:[0-9a-z]+\.[A-Za-z0-9_-]{22}$/);
    expect(reservationIdTime(id)).toBe(1_800_000_000_000);
    const key = reservationKey('tollgate', id);
    expect(key).toMatch(/^tollgate:v:\{[0-9a-z]{1,4}\}:/);
    expect(keySlot(key)).toBe(keySlot('acme'));
    expect(keySlotTag('tollgate:r:t:{acme}')).toBe(id.split(':')[0]);
    expect(reservationIdTime('toolongtag:abc.AAAAAAAAAAAAAAAAAAAAAA')).toBeUndefined();
    expect(queueStreamKey('tollgate', 'batch', true)).toBe('tollgate:q:{q.batch}');
    expect(queueStreamKey('tollgate', 'batch')).toBe('tollgate:q:batch');
    expect(usageStreamKey('tollgate', 'usage', true)).toBe('tollgate:u:{u.usage}');
  });
});
