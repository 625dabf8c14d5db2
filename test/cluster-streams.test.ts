/**
 * What lives beside the budgets on a Valkey Cluster (a real 3+3 cluster): the queue tier's stream in
 * its own slot ({q.<queue>}) — calls queued over real gRPC, read and acked by `tollgate-queue
 * --cluster`'s consumer — and the answer cache in the slot {a} (fill, lookup, purge through the
 * cluster client), and the usage export stream ({u.<name>}) written once per settled call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueConsumer } from '../src/queue/consumer.js';
import { ValkeyAnswerStore } from '../src/store/answer-valkey.js';
import { ClusterStore } from '../src/store/cluster.js';
import { keySlot } from '../src/store/slot.js';
import { EntryKind } from '../src/store/types.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startCluster, type TestCluster } from './helpers/valkey-cluster.js';

let cluster: TestCluster;
const apps: TestApp[] = [];
beforeAll(async () => {
  cluster = await startCluster();
}, 60_000);
afterAll(async () => {
  for (const a of apps) await a.close(500);
  await cluster?.stop();
});

/** A key's value as its owner node holds it. */
async function owner(key: string) {
  return cluster.client((await cluster.slotOwner(keySlot(key))).port);
}

describe('queue tier on a cluster', () => {
  it('queues calls refused by a queueable limit (202) in the queue slot; the --cluster consumer reads and acks them', async () => {
    const app = await startTestApp(
      `
queues:
  overflow: { max_length: 3, tenant_share: 100% }
limits:
  - { name: tiny, per: tenant, requests: 1, every: 1h, when_exhausted: queue }
store: { topology: cluster, shard_by: tenant, prefix: cq }
`,
      { valkeyUrl: cluster.url },
    );
    apps.push(app);
    const client = new EnvoyClient(app.grpcPort);
    const h = { 'x-tenant-id': 'acme' };
    expect((await client.check({ headers: h, body: chat('m', 'first') })).allowed).toBe(true);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const q = await client.check({ headers: h, body: chat('m', `queued ${i}`) });
      expect(q.httpStatus).toBe(202);
      expect(q.json).toMatchObject({ status: 'queued', queue: 'overflow' });
      ids.push(q.json.id);
    }
    const full = await client.check({ headers: h, body: chat('m', 'no room') });
    expect(full.httpStatus).toBe(429);
    expect(full.json.queue).toBe('overflow');
    client.close();

    const stream = 'cq:q:{q.overflow}';
    expect(keySlot(stream)).not.toBe(keySlot('cq:r:tiny:{acme}'));
    expect(await (await owner(stream)).xlen(stream)).toBe(3);
    const c = new QueueConsumer({
      url: cluster.url,
      cluster: true,
      prefix: 'cq',
      queue: 'overflow',
      group: 'g',
      consumer: 'c1',
      blockMs: 100,
    });
    await c.init();
    const batch = await c.next();
    expect(batch.map((e) => e.id)).toEqual(ids);
    for (const e of batch) await c.ack(e);
    expect(await (await owner(stream)).xlen(stream)).toBe(0);
    expect(Number((await (await owner(`${stream}:acct`)).hget(`${stream}:acct`, 'b')) ?? 0)).toBe(0);
    c.client.disconnect();
  }, 30_000);
});

describe('answer cache on a cluster', () => {
  it('fills, finds and purges answers through the cluster client; every key in the slot of {a}', async () => {
    const s = new ValkeyAnswerStore({ url: cluster.url, timeoutMs: 2000 }, 'ca', true);
    expect(await s.ready).toBe(true);
    const hash = (n: number) => n.toString(16).padStart(64, '0');
    const put = (n: number) => ({
      scope: 'tenant.ab12',
      kind: 'tenant',
      hash: hash(n),
      value: Buffer.from(`answer ${n}`),
      ttlMs: 60_000,
      scopeMaxBytes: 1 << 20,
      maxBytes: 1 << 20,
    });
    for (const n of [1, 2, 3]) expect(await s.put(put(n))).toBe('stored');
    expect(await s.put(put(1))).toBe('exists');
    expect(String(await s.get('tenant.ab12', hash(2)))).toBe('answer 2');
    const keys = await (await owner('ca:{a}:a:idx')).keys('ca:*');
    expect(keys.length).toBeGreaterThan(3);
    for (const k of keys) expect(keySlot(k)).toBe(keySlot('a'));
    expect(await s.purge('tenant.ab12')).toMatchObject({ entries: 3 });
    expect(await s.get('tenant.ab12', hash(2))).toBeUndefined();
    await s.close();
  });
});

describe('usage export stream on a cluster', () => {
  it('one entry per settled call across slots, none for a duplicate', async () => {
    const store = new ClusterStore({ url: cluster.url, timeoutMs: 2000 });
    await store.connect();
    const stream = 'cu:u:{u.usage}';
    const keys = ['cu:r:a:{t1}', 'cu:r:global', 'cu:v:{x}:1'];
    const e = (key: number) => ({
      key,
      kind: EntryKind.Rolling,
      capacity: 100,
      period: 3_600_000,
      tzOffsetMin: 0,
      cost: 10,
      shadow: false,
      downgradeAt: 0,
    });
    const r = await store.check({
      keys,
      candidates: [[e(0), e(1)]],
      reservation: { key: 2, id: 'x:1', ttlMs: 60_000, records: ['rec'] },
    });
    expect(r.chosen).toBe(0);
    const reservation = (await store.reservation(keys[2]))!;
    expect(reservation.entries.map((x) => x.key)).toEqual(keys.slice(0, 2));
    const exp = { stream, maxLength: 1000, fields: ['id', 'x:1'] };
    const req = { key: keys[2], reservation, actual: [4, 4], export: exp };
    expect(await store.settle(req)).toEqual({ outcome: 'settled', remaining: [96, 96] }); // 100 − 10 + (10 − 4);
    expect((await store.settle(req)).outcome).toBe('duplicate');
    expect(await (await owner(stream)).xlen(stream)).toBe(1);
    await store.close();
  });
});

describe('a slot that fails mid-check', () => {
  it('refunds the slots that debited, then fails the call (answered per on_store_failure)', async () => {
    const store = new ClusterStore({ url: cluster.url, timeoutMs: 2000 });
    await store.connect();
    const good = 'cf:r:a:{t1}';
    const broken = 'cf:r:b:{t2}';
    expect(keySlot(good)).not.toBe(keySlot(broken));
    // a key of the wrong type: the check script fails on that slot (WRONGTYPE), after the other debits
    await (await owner(broken)).set(broken, 'not a bucket');
    const e = (key: number) => ({
      key,
      kind: EntryKind.Rolling,
      capacity: 100,
      period: 30 * 86_400_000,
      tzOffsetMin: 0,
      cost: 10,
      shadow: false,
      downgradeAt: 0,
    });
    await expect(store.check({ keys: [good, broken], candidates: [[e(0), e(1)]] })).rejects.toThrow(
      /WRONGTYPE/,
    );
    const left = await store.check({ keys: [good], candidates: [[{ ...e(0), cost: 0 }]] });
    expect(left.candidates[0][0].remaining).toBe(100); // the debit on the good slot was given back
    await store.close();
  });
});
