/**
 * store.topology: sentinel against a real topology (test/helpers/sentinel.ts: 1 primary, 1 replica,
 * 3 sentinels, quorum 2, down-after 1 s): tollgate finds the primary through the sentinels, enforces
 * exactly, and after `SENTINEL FAILOVER` and after a SIGKILLed primary answers every check per
 * on_store_failure while the switch runs and enforces exactly again within 10 s. The over-admission
 * during each switch is measured and logged. store.wait_replicas: 1: an allowed check's writes are on
 * the replica when its answer arrives; a replica that does not answer is counted, the check answered.
 * TOLLGATE_SOAK=1: the killed-primary switch five times more.
 */
import type { Valkey } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EntryKind } from '../src/store/types.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { type CheckAnswer, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate } from './helpers/proc.js';
import { startSentinel, type TestSentinel } from './helpers/sentinel.js';

const SOAK = process.env.TOLLGATE_SOAK === '1';
const LIMIT = 5;
const DEADLINE_MS = 250;
const config = (extra = '') => `
server: { decision_deadline: ${DEADLINE_MS}ms }
store:
  topology: sentinel
  timeout: 100ms
  breaker: { failures: 3, open_for: 500ms }
  on_store_failure: allow
${extra}
limits:
  - { name: tenant-requests, per: tenant, requests: ${LIMIT}, every: 1h }
`;
const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let topo: TestSentinel;
const apps: { app: TestApp; client: EnvoyClient }[] = [];

async function serve(yaml: string) {
  const app = await startTestApp(yaml, { valkeySentinel: topo.target });
  const client = new EnvoyClient(app.grpcPort);
  apps.push({ app, client });
  return { app, client };
}

let shared: Promise<{ app: TestApp; client: EnvoyClient }> | undefined;
/** The app the enforcement and failover tests share (any of them may run alone with -t). */
const main = () => {
  shared ??= serve(config());
  return shared;
};

const check = (client: EnvoyClient, tenant: string) =>
  client.check({ path: '/v1/chat/completions', headers: { 'x-tenant-id': tenant }, body });
const degraded = (a: CheckAnswer) => Boolean(a.headers['x-tollgate-degraded']);
/** An answer per policy: the limit's own (allowed, or 429 naming it), or on_store_failure: allow. */
const perPolicy = (a: CheckAnswer) =>
  a.allowed || (a.httpStatus === 429 && a.json?.limit === 'tenant-requests' && !degraded(a));

/** A fresh tenant gets exactly LIMIT real allows, then a real deny. */
async function enforced(client: EnvoyClient, tenant: string): Promise<boolean> {
  for (let i = 0; i < LIMIT; i++) {
    const a = await check(client, tenant);
    if (!a.allowed || degraded(a)) return false;
  }
  const d = await check(client, tenant);
  return !d.allowed && d.httpStatus === 429 && !degraded(d);
}

interface LoadReport {
  answers: number;
  maxMs: number;
  notPerPolicy: number;
  degraded: number;
  /** Allows beyond LIMIT per tenant: all of them, and those Valkey itself answered (lost debits). */
  overAdmitted: number;
  overAdmittedByStore: number;
}

/**
 * 8 workers send checks until `stop()`; the tenant changes every 100 ms, so each gets more calls than
 * its limit and every allow past LIMIT is over-admission.
 */
function load(client: EnvoyClient): { stop: () => Promise<LoadReport> } {
  let running = true;
  const perTenant = new Map<string, { allowed: number; byStore: number }>();
  const r: LoadReport = {
    answers: 0,
    maxMs: 0,
    notPerPolicy: 0,
    degraded: 0,
    overAdmitted: 0,
    overAdmittedByStore: 0,
  };
  const worker = async () => {
    while (running) {
      const tenant = `load-${Math.floor(Date.now() / 100)}`;
      const t0 = performance.now();
      const a = await check(client, tenant);
      r.maxMs = Math.max(r.maxMs, performance.now() - t0);
      r.answers++;
      if (!perPolicy(a)) r.notPerPolicy++;
      if (degraded(a)) r.degraded++;
      const t = perTenant.get(tenant) ?? { allowed: 0, byStore: 0 };
      if (a.allowed) t.allowed++;
      if (a.allowed && !degraded(a)) t.byStore++;
      perTenant.set(tenant, t);
    }
  };
  const workers = Array.from({ length: 8 }, worker);
  return {
    stop: async () => {
      running = false;
      await Promise.all(workers);
      for (const t of perTenant.values()) {
        r.overAdmitted += Math.max(0, t.allowed - LIMIT);
        r.overAdmittedByStore += Math.max(0, t.byStore - LIMIT);
      }
      return r;
    },
  };
}

/** ms from `since` until a fresh tenant is enforced exactly again. */
async function enforcementBack(client: EnvoyClient, since: number, label: string): Promise<number> {
  for (let i = 0; ; i++) {
    if (await enforced(client, `${label}-probe-${i}`)) return Date.now() - since;
    if (Date.now() - since > 20_000) throw new Error(`${label}: enforcement not back after 20 s`);
    await sleep(100);
  }
}

/** A key's value, whatever its type (DUMP's encoding may differ between a primary and its replica). */
async function read(c: Valkey, key: string): Promise<unknown> {
  const type = await c.type(key);
  if (type === 'hash') return c.hgetall(key);
  if (type === 'string') return c.get(key);
  if (type === 'zset') return c.zrange(key, 0, -1, 'WITHSCORES');
  return [type, await c.pttl(key)];
}

/** The replica follows the current primary again (after a failover, before the next one). */
async function replicaSynced(): Promise<void> {
  const primary = await topo.primaryPort();
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const replica = await topo.replica();
    const info = await replica.client.info('replication').catch(() => '');
    if (info.includes(`master_port:${primary}`) && info.includes('master_link_status:up')) return;
    // the sentinels demote the old primary on their next 10 s INFO round; do what they would, sooner
    if (!info.includes(`master_port:${primary}`))
      await replica.client.replicaof('127.0.0.1', primary).catch(() => {});
    await sleep(100);
  }
  throw new Error('replica did not resync');
}

beforeAll(async () => {
  topo = await startSentinel();
}, 40_000);

afterAll(async () => {
  for (const { app, client } of apps) {
    client.close();
    await app.close(500);
  }
  await topo?.close();
});

describe('store.topology: sentinel', () => {
  it('store.wait_replicas: 1: an allowed check is on the replica when it is answered; a silent replica is counted, the check answered', async () => {
    const { app, client } = await serve(config('  wait_replicas: 1\n  prefix: wr'));
    const primary = await topo.primary();
    const replica = await topo.replica();
    for (let i = 0; i < LIMIT; i++) {
      const a = await check(client, 'wait');
      expect(a.allowed && !degraded(a)).toBe(true);
      // read the replica at once: the reservation record and every limit key equal the primary's
      expect(await replica.client.exists(`wr:v:${a.reservation}`)).toBe(1);
      const keys = (await primary.client.keys('wr:*')).sort();
      for (const k of keys) expect(await read(replica.client, k)).toEqual(await read(primary.client, k));
    }
    expect(app.store.waitShort).toBe(0);
    // a stopped replica: the check is answered as decided within the store timeout, the short WAIT
    // counted; for the next second writes skip WAIT (counted too) instead of stalling the connection
    replica.proc.kill('SIGSTOP');
    try {
      for (const [i, tenant] of ['wait-stopped', 'wait-skipped'].entries()) {
        const t0 = performance.now();
        const a = await check(client, tenant);
        const ms = performance.now() - t0;
        console.log(`wait_replicas: 1, replica stopped (${tenant}): answered in ${ms.toFixed(0)} ms`);
        expect(a.allowed && !degraded(a)).toBe(true);
        expect(ms).toBeLessThan(DEADLINE_MS);
        expect(app.store.waitShort).toBe(i + 1);
      }
    } finally {
      replica.proc.kill('SIGCONT');
    }
    const metrics = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
    expect(metrics).toMatch(/^tollgate_store_wait_short_total 2$/m);
  });

  it('enforces a limit exactly through the primary the sentinels name', async () => {
    const { app, client } = await main();
    expect(app.store.constructor.name).toBe('IovalkeyStore');
    const answers = await Promise.all(Array.from({ length: 3 * LIMIT }, () => check(client, 'exact')));
    expect(answers.filter((a) => a.allowed)).toHaveLength(LIMIT);
    expect(answers.every((a) => perPolicy(a) && !degraded(a))).toBe(true);
    const primary = await topo.primary();
    expect(await primary.client.exists(`tollgate:r:tenant-requests`)).toBe(0); // keys are per tenant
    expect((await primary.client.keys('tollgate:r:tenant-requests*')).length).toBeGreaterThan(0);
  });

  it('SENTINEL FAILOVER under load: every check answered per policy in time, enforcement back within 10 s', async () => {
    const { client } = await main();
    const before = await topo.primaryPort();
    const run = load(client);
    await sleep(500);
    const t0 = Date.now();
    await topo.sentinels[0].client.call('SENTINEL', 'FAILOVER', topo.target.name);
    const now = await topo.waitPromoted(before);
    const promotedMs = Date.now() - t0;
    const backMs = await enforcementBack(client, t0, 'failover');
    await sleep(500);
    const r = await run.stop();
    console.log(
      `SENTINEL FAILOVER: primary ${before} → ${now} in ${promotedMs} ms, enforcement back after ${backMs} ms; ` +
        `${r.answers} checks, slowest ${r.maxMs.toFixed(0)} ms, ${r.degraded} answered per on_store_failure, ` +
        `over-admitted ${r.overAdmitted} (${r.overAdmittedByStore} by the store itself)`,
    );
    expect(r.notPerPolicy).toBe(0);
    expect(r.maxMs).toBeLessThan(3 * DEADLINE_MS + 250); // the overload budget, plus a loaded host's slack
    expect(backMs).toBeLessThan(10_000);
  }, 30_000);

  it(
    'a SIGKILLed primary: the replica is promoted, every check answered, enforcement back within 10 s',
    async () => {
      const { client } = await main();
      for (let round = 0; round < (SOAK ? 6 : 1); round++) {
        await replicaSynced();
        const old = await topo.primary();
        const run = load(client);
        await sleep(500);
        const t0 = Date.now();
        old.proc.kill('SIGKILL');
        const now = await topo.waitPromoted(old.port);
        const promotedMs = Date.now() - t0;
        const backMs = await enforcementBack(client, t0, `kill-${round}`);
        await sleep(500);
        const r = await run.stop();
        console.log(
          `SIGKILL primary: ${old.port} → ${now} promoted after ${promotedMs} ms, enforcement back after ${backMs} ms; ` +
            `${r.answers} checks, slowest ${r.maxMs.toFixed(0)} ms, ${r.degraded} answered per on_store_failure, ` +
            `over-admitted ${r.overAdmitted} (${r.overAdmittedByStore} by the store itself)`,
        );
        expect(r.notPerPolicy).toBe(0);
        expect(r.maxMs).toBeLessThan(3 * DEADLINE_MS + 250);
        expect(backMs).toBeLessThan(10_000);
        if (SOAK) await topo.restartAsReplica(old);
      }
    },
    SOAK ? 180_000 : 30_000,
  );

  it('after the failovers, reservation reads, settle and admin adjust run on the new primary', async () => {
    const { app, client } = await main();
    const a = await check(client, 'settle-after');
    expect(a.allowed && !degraded(a)).toBe(true);
    const key = `tollgate:v:${a.reservation}`;
    const reservation = await app.store.reservation(key);
    expect(reservation?.entries).toHaveLength(1);
    const settled = await app.store.settle({ key, reservation: reservation!, actual: [0] });
    expect(settled).toEqual({ outcome: 'settled', remaining: [LIMIT] });
    expect(await (await topo.primary()).client.hget(key, 's')).not.toBeNull();
    for (let i = 0; i < LIMIT; i++) await check(client, 'adjusted');
    const entry = {
      key: 0,
      kind: EntryKind.Rolling,
      capacity: LIMIT,
      period: 3_600_000,
      tzOffsetMin: 0,
      cost: 0,
      shadow: false,
      downgradeAt: 0,
    };
    const credit = await app.store.adjust!({
      op: 'credit',
      key: 'tollgate:r:tenant-requests:adjusted',
      entry,
      amount: 1,
    });
    expect(credit.remaining).toBe(1);
  });

  it('the CLI (`tollgate serve`) finds the primary through VALKEY_SENTINELS and VALKEY_SENTINEL_NAME', async () => {
    const t = await spawnTollgate({ yaml: config(), env: topo.env });
    const client = new EnvoyClient(t.grpcPort);
    try {
      expect(await enforced(client, 'cli')).toBe(true);
      expect(t.output()).toMatch(/"topology":"sentinel".*connected to Valkey/);
    } finally {
      client.close();
      await t.stop('SIGTERM');
    }
  });
});
