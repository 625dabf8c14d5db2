/**
 * The real-cluster harness itself (test/helpers/valkey-cluster.ts): 3 primaries + 3 replicas from
 * valkey-server, every slot covered; 100 slots resharded under SET/GET load through iovalkey's
 * Cluster client with no failed command (it follows MOVED/ASK); a primary SIGKILLed, its replica
 * promoted, writes working again through the same client, and the killed node back as a replica.
 */
import { Cluster } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SLOTS, startCluster, type TestCluster } from './helpers/valkey-cluster.js';

describe('valkey cluster harness', { timeout: 40_000 }, () => {
  let cl: TestCluster;
  let client: Cluster;
  /** key → slot for 4000 keys, from CLUSTER KEYSLOT in one pipeline. */
  const slotOf = new Map<string, number>();

  beforeAll(async () => {
    cl = await startCluster();
    const seeds = cl.url
      .replace(/^valkey:\/\//, '')
      .split(',')
      .map((hp) => ({ host: '127.0.0.1', port: Number(hp.split(':')[1]) }));
    // Without auto-pipelining: iovalkey (like ioredis, redis/ioredis#2075) batches auto-pipelined commands
    // per node and retries a batch on MOVED only when every command in it got the same redirection, so
    // during a reshard some commands fail with MOVED or "All keys in the pipeline should belong to the same
    // slots allocation group" (docs/cluster-clients.md). One command at a time, every MOVED/ASK is followed.
    client = new Cluster(seeds, { enableAutoPipelining: false });
    client.on('error', () => {});
    const keys = Array.from({ length: 4000 }, (_, i) => `h:${i}`);
    const p = cl.client(cl.ports[0]).pipeline();
    for (const k of keys) p.call('CLUSTER', 'KEYSLOT', k);
    const res = (await p.exec())!;
    for (const [i, k] of keys.entries()) slotOf.set(k, Number(res[i][1]));
  }, 40_000);

  afterAll(async () => {
    client?.disconnect();
    await cl?.stop();
  });

  const keysIn = (ranges: Array<[number, number]>) =>
    [...slotOf].filter(([, s]) => ranges.some(([a, b]) => s >= a && s <= b)).map(([k]) => k);

  it('starts 3 primaries and 3 replicas covering all 16384 slots', async () => {
    const primaries = await cl.primaries();
    const replicas = await cl.replicas();
    expect(primaries).toHaveLength(3);
    expect(replicas).toHaveLength(3);
    expect(primaries.reduce((n, p) => n + p.slotCount, 0)).toBe(CLUSTER_SLOTS);
    expect(new Set(replicas.map((r) => r.primaryId))).toEqual(new Set(primaries.map((p) => p.id)));
    expect(cl.seeds).toHaveLength(6);
    expect(cl.url).toMatch(/^valkey:\/\/127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+){2}$/);
    const owner = await cl.slotOwner(await cl.keySlot('h:0'));
    expect(owner.slotCount).toBeGreaterThan(0);
    // The Cluster client routes a key to the primary slotOwner names.
    await client.set('h:0', 'x');
    expect(await cl.client(owner.port).call('EXISTS', 'h:0')).toBe(1);
  });

  it('reshards 100 slots under SET/GET load through the Cluster client with every command succeeding', async () => {
    const [from, to] = await cl.primaries();
    const moving = keysIn([[from.slots[0][0], from.slots[0][0] + 99]]);
    expect(moving.length).toBeGreaterThan(5);
    const others = keysIn([[to.slots[0][0], to.slots[0][0] + 999]]).slice(0, 50);
    const keys = [...moving, ...others];
    for (const k of keys) await client.set(k, `${k}:0`);
    const keysBefore = (await cl.keysPerNode()).find((n) => n.id === to.id)!.keys;

    const { done } = cl.startReshard({ from: from.port, to: to.port, slots: 100 });
    let finished = false;
    let ops = 0;
    const failures: string[] = [];
    // Each worker owns its keys (w, w+8, …), so a GET must return that worker's last SET.
    const worker = async (w: number) => {
      const mine = keys.filter((_, j) => j % 8 === w);
      for (let i = 0; !finished; i++) {
        const k = mine[i % mine.length];
        const v = `${k}:${w}:${i}`;
        try {
          await client.set(k, v);
          const got = await client.get(k);
          if (got !== v) failures.push(`${k}: wrote ${v}, read ${got}`);
          ops += 2;
        } catch (e) {
          failures.push(`${k}: ${String(e)}`);
        }
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    const result = await done;
    finished = true;
    await load;

    expect(failures).toEqual([]);
    expect(ops).toBeGreaterThan(100);
    expect(result.slots).toBe(100);
    const movedSlot = from.slots[0][0];
    expect((await cl.slotOwner(movedSlot)).id).toBe(to.id);
    expect((await cl.primaries()).find((p) => p.id === from.id)!.slotCount).toBe(from.slotCount - 100);
    // The keys went with their slots.
    expect((await cl.keysPerNode()).find((n) => n.id === to.id)!.keys).toBe(keysBefore + moving.length);
    for (const k of moving) expect(await client.get(k)).toMatch(new RegExp(`^${k}:`));
  });

  it('kills a primary: its replica is promoted and writes work again through the Cluster client', async () => {
    const victim = await cl.slotOwner(0);
    const replica = (await cl.replicas()).find((r) => r.primaryId === victim.id)!;
    const keys = keysIn(victim.slots).slice(0, 20);
    const direct = cl.client(victim.port);
    for (const k of keys) await direct.set(k, 'before');
    expect(await direct.call('WAIT', 1, 2000)).toBe(1);

    const kill = await cl.killPrimary(victim.port);
    expect(kill.killedPort).toBe(victim.port);
    expect(kill.newPrimaryPort).toBe(replica.port);
    expect(kill.ms).toBeLessThan(15_000);
    expect((await cl.slotOwner(0)).port).toBe(replica.port);
    expect((await cl.primaries()).map((p) => p.port)).not.toContain(victim.port);

    for (const k of keys) {
      expect(await client.get(k)).toBe('before');
      await client.set(k, 'after');
      expect(await client.get(k)).toBe('after');
    }

    await cl.restartNode(victim.port);
    const back = (await cl.replicas()).find((r) => r.port === victim.port);
    expect(back?.primaryId).toBe((await cl.slotOwner(0)).id);
  });
});
