/**
 * Degrade instead of deny: fallback chains decided atomically, downgrade thresholds, the queue tier and
 * shadow mode — real gRPC, real valkey-server.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { QueueConsumer } from '../src/queue/consumer.js';
import { getEncoder } from '../src/tokens/encoders.js';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';

const { vk: valkey, serve } = valkeyApps();
let n = 0;
const tenant = () => `d${Date.now()}-${++n}`;

const CHAIN = `
models:
  premium:
    encoding: o200k_base
    price_usd_per_1m: { input: 10, output: 30 }
    fallback: standard
  standard:
    encoding: o200k_base
    price_usd_per_1m: { input: 1, output: 2 }
    fallback: legacy
  legacy:
    encoding: cl100k_base
    price_usd_per_1m: { input: 0.5, output: 1 }
limits:
  - { name: all-requests, per: tenant, requests: 1000, every: 1h }
  - { name: premium-tokens, per: tenant, models: [premium], tokens: 1000, every: 1h }
  - { name: standard-tokens, per: tenant, models: [standard], tokens: 1000, every: 1h }
  - { name: legacy-tokens, per: tenant, models: [legacy], tokens: 1000, every: 2h }
`;

describe('fallback chains', () => {
  it('walks the chain: each candidate costed with its own encoding, exactly one debit', async () => {
    const { client } = await serve(CHAIN);
    const t = tenant();
    const h = { 'x-tenant-id': t };
    const text = '東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。';
    const body = chat('premium', text, { max_tokens: 600 });
    const a1 = await client.check({ headers: h, body });
    expect(a1.allowed).toBe(true);
    expect(a1.upstream['x-tollgate-model']).toBeUndefined();
    const a2 = await client.check({ headers: h, body });
    expect(a2.upstream['x-tollgate-model']).toBe('standard');
    expect(a2.upstream['x-tollgate-rerouted-from']).toBe('premium');
    const a3 = await client.check({ headers: h, body });
    expect(a3.upstream['x-tollgate-model']).toBe('legacy');
    expect(a3.headers['x-tollgate-model']).toBe('legacy');
    expect(a3.headers['x-tollgate-rerouted-from']).toBe('premium');
    const o200 = getEncoder('o200k_base').encode(text).length + 7 + 600;
    const cl100 = getEncoder('cl100k_base').encode(text).length + 7 + 600;
    expect(o200).not.toBe(cl100);
    const level = async (l: string) => Number(await valkey().client.hget(`tollgate:r:${l}:${t}`, 'v'));
    expect(Math.round(await level('premium-tokens'))).toBe(1000 - o200);
    expect(Math.round(await level('standard-tokens'))).toBe(1000 - o200);
    expect(Math.round(await level('legacy-tokens'))).toBe(1000 - cl100);
    expect(Math.round(await level('all-requests'))).toBe(997);

    // nothing fits now: deny with the earliest Retry-After of any candidate, naming each candidate's limits
    const d = await client.check({ headers: h, body });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(429);
    expect(d.json.candidates).toEqual([
      { model: 'premium', limits: ['premium-tokens'] },
      { model: 'standard', limits: ['standard-tokens'] },
      { model: 'legacy', limits: ['legacy-tokens'] },
    ]);
    // premium/standard refill at 1000 tokens/h, legacy at 500/h: premium (first) is the earliest
    const missing = o200 - (1000 - o200);
    const expected = Math.ceil((missing * 3_600_000) / 1000);
    expect(Number(d.headers['retry-after-ms'])).toBeLessThanOrEqual(expected);
    expect(Number(d.headers['retry-after-ms'])).toBeGreaterThan(expected - 5000);
    expect(['premium-tokens', 'standard-tokens']).toContain(d.json.limit);
    expect(Math.round(await level('all-requests'))).toBe(997);
  });

  it('rejects fallback cycles at config load', () => {
    expect(() =>
      parseConfigText('models:\n  a: { fallback: b }\n  b: { fallback: c }\n  c: { fallback: a }\n'),
    ).toThrow(/models\["a"\]\.fallback: cycle a → b → c → a/);
  });

  it('downgrade_below routes calls that have a fallback before the limit is spent', async () => {
    const { client } = await serve(`
models:
  big: { encoding: o200k_base, fallback: small }
  small: { encoding: o200k_base }
limits:
  - { name: big-tokens, per: tenant, models: [big], tokens: 1000, every: 1h, downgrade_below: 20% }
`);
    const t = tenant();
    const ask = (model: string) =>
      client.check({ headers: { 'x-tenant-id': t }, body: chat(model, 'x', { max_tokens: 292 }) }); // 300 tokens
    expect((await ask('big')).upstream['x-tollgate-model']).toBeUndefined(); // 700 left
    expect((await ask('big')).upstream['x-tollgate-model']).toBeUndefined(); // 400 left
    const third = await ask('big'); // would leave 100 < 200
    expect(third.allowed).toBe(true);
    expect(third.upstream['x-tollgate-model']).toBe('small');
    expect(Math.round(Number(await valkey().client.hget(`tollgate:r:big-tokens:${t}`, 'v')))).toBe(400);
  });
});

describe('queue tier', () => {
  it('queues calls that do not fit (202), answers 429 when full, never trims accepted entries', async () => {
    const { client } = await serve(`
queues:
  overflow: { max_length: 3, tenant_share: 100% }   # one tenant may fill it (default share: 25%)
limits:
  - { name: tiny, per: tenant, requests: 1, every: 1h, when_exhausted: queue }
`);
    const t = tenant();
    const h = { 'x-tenant-id': t };
    expect((await client.check({ headers: h, body: chat('m', 'first') })).allowed).toBe(true);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const q = await client.check({ headers: h, body: chat('m', `queued ${i}`) });
      expect(q.allowed).toBe(false);
      expect(q.httpStatus).toBe(202);
      expect(q.json).toMatchObject({ status: 'queued', queue: 'overflow' });
      expect(q.headers['x-tollgate-queue-id']).toBe(q.json.id);
      ids.push(q.json.id);
    }
    const full = await client.check({ headers: h, body: chat('m', 'no room') });
    expect(full.httpStatus).toBe(429);
    expect(full.json.queue).toBe('overflow');
    expect(full.json.error.message).toContain('queue "overflow" is full');
    expect(Number(full.headers['retry-after'])).toBeGreaterThan(0);
    expect(await valkey().client.xlen('tollgate:q:overflow')).toBe(3);

    // a consumer sees every accepted call, in order, and acking frees room
    const c = new QueueConsumer({
      url: valkey().url,
      queue: 'overflow',
      group: 'g',
      consumer: 'c1',
      blockMs: 100,
    });
    await c.init();
    const batch = await c.next();
    expect(batch.map((e) => e.id)).toEqual(ids);
    expect(JSON.parse(batch[0].body).messages[0].content).toBe('queued 0');
    expect(batch[0]).toMatchObject({ tenant: t, model: 'm' });
    expect(batch[0].cost).toBeGreaterThan(0);
    for (const e of batch) await c.ack(e);
    expect(await valkey().client.xlen('tollgate:q:overflow')).toBe(0);
    c.close();
    const again = await client.check({ headers: h, body: chat('m', 'room again') });
    expect(again.httpStatus).toBe(202);
  });

  it('the shipped consumer command (tollgate-queue) hands each entry to --exec and acks on success', async () => {
    const { client } = await serve(`
queues:
  cli: { max_length: 10 }
limits:
  - { name: cli-limit, per: tenant, requests: 1, every: 1h, when_exhausted: queue, queue: cli }
`);
    const h = { 'x-tenant-id': tenant() };
    await client.check({ headers: h, body: chat('m', 'served') });
    const ids = [];
    for (let i = 0; i < 2; i++)
      ids.push((await client.check({ headers: h, body: chat('m', `later ${i}`) })).json.id);
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-queue-'));
    const out = join(dir, 'seen.jsonl');
    const cli = fileURLToPath(new URL('../dist/src/queue/consume-cli.js', import.meta.url));
    const r = spawnSync(
      process.execPath,
      [cli, '--queue', 'cli', '--group', 'workers', '--once', '--exec', `cat >> ${out}; echo >> ${out}`],
      {
        env: { ...process.env, VALKEY_URL: valkey().url },
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('handled 2 entries');
    const seen = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(seen.map((e) => e.id)).toEqual(ids);
    expect(JSON.parse(seen[1].body).messages[0].content).toBe('later 1');
    expect(await valkey().client.xlen('tollgate:q:cli')).toBe(0); // acked and deleted
  });

  it('a limit without when_exhausted: queue still denies', async () => {
    const { client } = await serve(`
queues:
  q: {}
limits:
  - { name: queued-limit, per: tenant, requests: 5, every: 1h, when_exhausted: queue }
  - { name: hard-limit, per: tenant, requests: 1, every: 1h }
`);
    const h = { 'x-tenant-id': tenant() };
    await client.check({ headers: h, body: chat('m', 'a') });
    const d = await client.check({ headers: h, body: chat('m', 'b') });
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('hard-limit');
  });

  it('validates queue references', () => {
    expect(() =>
      parseConfigText('limits:\n  - { name: a, requests: 1, every: 1m, when_exhausted: queue }\n'),
    ).toThrow(/limits\[0\]\.queue: expected the name of a queue/);
    expect(() =>
      parseConfigText(
        'queues: { q: {} }\nlimits:\n  - { name: a, requests: 1, every: 1m, when_exhausted: queue, queue: nope }\n',
      ),
    ).toThrow(/limits\[0\]\.queue: expected a queue defined under "queues" \(q\), got "nope"/);
  });
});

describe('shadow mode', () => {
  it('a shadow limit counts, never denies, and marks where it would have denied', async () => {
    const { client } = await serve(`
limits:
  - { name: enforced, per: tenant, requests: 100, every: 1h }
  - { name: trial, per: tenant, requests: 2, every: 1h, mode: shadow }
`);
    const h = { 'x-tenant-id': tenant() };
    const results = [];
    for (let i = 0; i < 4; i++) results.push(await client.check({ headers: h, body: chat('m', 'x') }));
    expect(results.every((r) => r.allowed)).toBe(true);
    expect(results.map((r) => r.upstream['x-tollgate-shadow'])).toEqual([
      undefined,
      undefined,
      'deny;limit=trial',
      'deny;limit=trial',
    ]);
    expect(results[3].headers['x-tollgate-shadow']).toBe('deny;limit=trial');
    expect(results[3].headers['x-ratelimit-remaining-requests']).toBe('96');
  });

  it('global mode: shadow turns every limit into a shadow limit', async () => {
    const { client } = await serve(`
mode: shadow
limits:
  - { name: one, per: tenant, requests: 1, every: 1h }
`);
    const h = { 'x-tenant-id': tenant() };
    expect(
      (await client.check({ headers: h, body: chat('m', 'x') })).upstream['x-tollgate-shadow'],
    ).toBeUndefined();
    const second = await client.check({ headers: h, body: chat('m', 'x') });
    expect(second.allowed).toBe(true);
    expect(second.upstream['x-tollgate-shadow']).toBe('deny;limit=one');
  });
});
