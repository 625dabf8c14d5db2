/**
 * Issue 19, item 5: a queue used to be able to fill Valkey (bounded by entry count only, each entry
 * holding a body). Now each queue has a byte budget (max_bytes) and each tenant a share
 * (tenant_share of entries and bytes), checked and charged by the same Lua call that decides; over
 * budget → 429 naming the queue. The consumer's ack / dead-letter releases an entry's bytes
 * atomically and at most once; a crashed consumer's entries stay counted until reclaimed.
 * Real gRPC Checks (Envoy's official protos), real Valkey.
 */
import { describe, expect, it } from 'vitest';
import { QueueConsumer } from '../src/queue/consumer.js';
import { valkeyApps } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { officialCheck } from './helpers/official.js';

const { vk, serve } = valkeyApps();
let n = 0;
const uid = (p: string) => `${p}-${Date.now()}-${n++}`;

/** A queue tier config: every call past the first per tenant is queued (or refused). */
const config = (prefix: string, queue: string) => `
queues:
  ${queue}
limits:
  - { name: tiny, per: tenant, requests: 1, every: 1h, when_exhausted: queue }
store: { prefix: ${prefix} }
`;
/** A ~20 KB chat body. */
const big = (tag: string) => chat('m', `${tag} ${'x'.repeat(20_000)}`);

async function acct(prefix: string, queue: string) {
  return vk().client.hgetall(`${prefix}:q:${queue}:acct`);
}

describe('queue byte budget (max_bytes)', () => {
  it('one tenant cannot fill Valkey: past max_bytes the queue answers 429 naming it, and accepts again once entries are acked', async () => {
    const prefix = uid('qb');
    const { app } = await serve(
      config(prefix, 'overflow: { max_length: 1000, max_bytes: 64KiB, tenant_share: 100% }'),
    );
    const h = { 'x-tenant-id': 'flooder' };
    expect((await officialCheck(app.grpcPort, { headers: h, body: big('first') })).allowed).toBe(true);
    const answers = [];
    for (let i = 0; i < 6; i++)
      answers.push(await officialCheck(app.grpcPort, { headers: h, body: big(`q${i}`) }));
    // 3 entries of ~20 KB fit in 64 KiB; the 4th does not, whatever max_length says
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202, 429, 429, 429]);
    const full = answers[3];
    expect(full.json.queue).toBe('overflow');
    expect(full.json.error.message).toContain('queue "overflow" is full');
    expect(full.json.error.message).toContain('max_bytes');
    expect(Number(full.headers['retry-after'])).toBeGreaterThan(0);
    const stream = `${prefix}:q:overflow`;
    expect(await vk().client.xlen(stream)).toBe(3);
    const counted = Number((await acct(prefix, 'overflow')).b);
    expect(counted).toBeGreaterThan(60_000);
    expect(counted).toBeLessThanOrEqual(64 * 1024);

    // the consumer's ack releases the bytes; acking twice (two consumers, a retry) releases once
    const c = new QueueConsumer({
      url: vk().url,
      prefix,
      queue: 'overflow',
      group: 'g',
      consumer: 'c1',
      blockMs: 100,
    });
    await c.init();
    const batch = await c.next();
    expect(batch).toHaveLength(3);
    expect(await c.ack(batch[0])).toBe(true);
    expect(await c.ack(batch[0])).toBe(false);
    expect(Number((await acct(prefix, 'overflow')).b)).toBeLessThan(counted);
    expect((await officialCheck(app.grpcPort, { headers: h, body: big('room') })).status).toBe(202);
    for (const e of batch.slice(1)) await c.ack(e);
    const rest = await c.next();
    for (const e of rest) await c.ack(e);
    c.close();
    expect(await vk().client.xlen(stream)).toBe(0);
    expect(await acct(prefix, 'overflow')).toEqual({}); // nothing counted, no field left behind
  });

  it('concurrent checks never overshoot the budget (checked and charged in the one script)', async () => {
    const prefix = uid('qc');
    const { app } = await serve(config(prefix, 'burst: { max_bytes: 200KiB, tenant_share: 100% }'));
    const client = new EnvoyClient(app.grpcPort);
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        client.check({ headers: { 'x-tenant-id': 'burst' }, body: big(`b${i}`) }),
      ),
    );
    client.close();
    const queued = answers.filter((a) => a.httpStatus === 202).length;
    expect(queued).toBeGreaterThan(5);
    expect(answers.filter((a) => a.httpStatus === 429).length).toBeGreaterThan(20);
    expect(await vk().client.xlen(`${prefix}:q:burst`)).toBe(queued);
    expect(Number((await acct(prefix, 'burst')).b)).toBeLessThanOrEqual(200 * 1024);
  });
});

describe('per-tenant share (tenant_share)', () => {
  it('one tenant holds at most its share of the entries; others still get queued', async () => {
    const prefix = uid('qt');
    const { app } = await serve(config(prefix, 'shared: { max_length: 8, tenant_share: 25% }'));
    const send = (t: string, tag: string) =>
      officialCheck(app.grpcPort, { headers: { 'x-tenant-id': t }, body: chat('m', tag) });
    await send('greedy', 'first');
    const greedy = [];
    for (let i = 0; i < 4; i++) greedy.push(await send('greedy', `g${i}`));
    expect(greedy.map((a) => a.status)).toEqual([202, 202, 429, 429]); // 25% of 8
    expect(greedy[2].json.queue).toBe('shared');
    expect(greedy[2].json.error.message).toContain('tenant_share');
    await send('modest', 'first');
    expect((await send('modest', 'm0')).status).toBe(202);
    expect(await vk().client.xlen(`${prefix}:q:shared`)).toBe(3);
    // the queue length gauge reads the same stream when scraped
    const text = await app.metrics.registry.metrics();
    expect(text).toMatch(/^tollgate_queue_length\{queue="shared"\} 3$/m);
  });
});

describe('defaults', () => {
  it('a queue configured as before (max_length only) already bounds each tenant to 25% of it', async () => {
    const prefix = uid('qd');
    const { app } = await serve(config(prefix, 'legacy: { max_length: 8 }'));
    const send = (tag: string) =>
      officialCheck(app.grpcPort, { headers: { 'x-tenant-id': 'past-its-limit' }, body: chat('m', tag) });
    await send('first');
    const a = [];
    for (let i = 0; i < 5; i++) a.push(await send(`l${i}`));
    expect(a.map((x) => x.status)).toEqual([202, 202, 429, 429, 429]);
    expect(a[2].json.queue).toBe('legacy');
    expect(await vk().client.xlen(`${prefix}:q:legacy`)).toBe(2);
  });
});

describe('the consumer keeps the counters right', () => {
  it('a crashed consumer leaves its entries counted until reclaimed; dead letters are released and bounded', async () => {
    const prefix = uid('qr');
    const { app } = await serve(config(prefix, 'jobs: { max_length: 2, tenant_share: 100% }'));
    const h = { 'x-tenant-id': 'worker-test' };
    await officialCheck(app.grpcPort, { headers: h, body: chat('m', 'first') });
    for (let i = 0; i < 2; i++)
      expect((await officialCheck(app.grpcPort, { headers: h, body: chat('m', `j${i}`) })).status).toBe(202);
    // c1 reads both entries and dies without acking: they stay pending, counted, the queue full
    const c1 = new QueueConsumer({
      url: vk().url,
      prefix,
      queue: 'jobs',
      group: 'g',
      consumer: 'c1',
      blockMs: 100,
    });
    await c1.init();
    expect(await c1.next()).toHaveLength(2);
    c1.close();
    expect((await officialCheck(app.grpcPort, { headers: h, body: chat('m', 'still full') })).status).toBe(
      429,
    );
    // c2 reclaims them (XAUTOCLAIM after min-idle), gives up on one (dead letter), finishes the other
    const c2 = new QueueConsumer({
      url: vk().url,
      prefix,
      queue: 'jobs',
      group: 'g',
      consumer: 'c2',
      blockMs: 100,
      minIdleMs: 1,
      deadMax: 1,
    });
    await c2.init();
    await new Promise((r) => setTimeout(r, 20));
    const reclaimed = await c2.next();
    expect(reclaimed).toHaveLength(2);
    expect(reclaimed[0].deliveries).toBe(2);
    expect(await c2.deadLetter(reclaimed[0])).toBe(true);
    expect(await c2.ack(reclaimed[1])).toBe(true);
    c2.close();
    expect(await vk().client.xlen(`${prefix}:q:jobs`)).toBe(0);
    expect(await acct(prefix, 'jobs')).toEqual({});
    const dead = (await vk().client.xrange(`${prefix}:q:jobs:dead`, '-', '+')) as [string, string[]][];
    expect(dead).toHaveLength(1);
    expect(dead[0][1]).toContain('body');
    // room again
    expect((await officialCheck(app.grpcPort, { headers: h, body: chat('m', 'again') })).status).toBe(202);
  });

  it('entries removed by hand (XDEL, not the release script) stop counting once the queue is empty', async () => {
    const prefix = uid('qx');
    const { app } = await serve(
      config(prefix, 'manual: { max_length: 100, max_bytes: 64KiB, tenant_share: 100% }'),
    );
    const h = { 'x-tenant-id': 'manual' };
    await officialCheck(app.grpcPort, { headers: h, body: chat('m', 'first') });
    for (let i = 0; i < 3; i++) await officialCheck(app.grpcPort, { headers: h, body: big(`m${i}`) });
    expect((await officialCheck(app.grpcPort, { headers: h, body: big('over') })).status).toBe(429);
    const stream = `${prefix}:q:manual`;
    const ids = ((await vk().client.xrange(stream, '-', '+')) as [string, string[]][]).map(([id]) => id);
    await vk().client.xdel(stream, ...ids);
    expect((await officialCheck(app.grpcPort, { headers: h, body: big('after') })).status).toBe(202);
    expect(Number((await acct(prefix, 'manual')).b)).toBeLessThan(25_000); // just the new entry
  });

  it('max_bytes and tenant_share are validated', async () => {
    const { parseConfigText } = await import('../src/config/load.js');
    expect(
      parseConfigText('queues: { q: { max_bytes: 64MiB, tenant_share: 10% } }').queues.get('q'),
    ).toMatchObject({
      maxBytes: 64 * 1024 * 1024,
      tenantMaxBytes: Math.floor(64 * 1024 * 1024 * 0.1),
      tenantMaxEntries: 1000,
    });
    expect(parseConfigText('queues: { q: {} }').queues.get('q')).toMatchObject({
      maxLength: 10_000,
      maxBytes: 64 * 1024 * 1024,
      tenantMaxEntries: 2500,
    });
    expect(() => parseConfigText('queues: { q: { max_bytes: lots } }')).toThrow(/queues\.q\.max_bytes/);
    expect(() => parseConfigText('queues: { q: { tenant_share: 150% } }')).toThrow(/queues\.q\.tenant_share/);
  });
});
