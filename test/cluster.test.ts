/**
 * store.topology: cluster end to end: 4 tollgate processes (the real CLI) on a real 3+3 Valkey Cluster
 * (test/helpers/valkey-cluster.ts), driven over gRPC as Envoy's ext_authz and ext_proc filters do.
 * Per-tenant limits: exact admission, one script call per check. A limit in another slot: all or
 * nothing (refused calls leave no debit on either side). Settle and concurrency release across slots.
 * Resharding under load: every check answered, nothing over any limit. A primary killed under load:
 * answers keep coming, enforcement is back within ~10 s, the over-admission is measured and bounded.
 * Valkey state is read on each key's owner node. One cluster and one fleet for the file: each test's
 * limits apply to its own model (m1…m6), so the tests do not see each other's limits.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySlot } from '../src/store/slot.js';
import { checkWithin } from './helpers/answer.js';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { playExtProc } from './helpers/ext-proc.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { chatJson } from './helpers/provider-bodies.js';
import { startCluster, type TestCluster } from './helpers/valkey-cluster.js';

const CONTENT = 'How many tokens is this?';
const G = 600; // the global limit of test 2
const L = 40; // per tenant, tests 1 and 2
// One fleet for the file: each test's limits apply to its own model only.
const CONFIG = `
models:
  "*": { encoding: cl100k_base, default_max_output_tokens: 16 }
${[1, 2, 3, 4, 5, 6].map((i) => `  m${i}: { encoding: cl100k_base, default_max_output_tokens: 16 }`).join('\n')}
limits:
  - { name: req1, per: tenant, requests: ${L}, every: 1d, models: [m1] }
  - { name: tok1, per: tenant, tokens: 200000, reset: daily, models: [m1] }
  - { name: glob2, requests: ${G}, every: 1d, models: [m2] }
  - { name: req2, per: tenant, requests: ${L}, every: 1d, models: [m2] }
  - { name: tok3, per: tenant, tokens: 1000000, reset: daily, models: [m3] }
  - { name: conc3, concurrent: 64, lease: 60s, models: [m3] }
  - { name: req4, per: tenant, requests: 150, every: 1d, models: [m4] }
  - { name: req5, per: tenant, requests: 20, every: 1d, models: [m5] }
  - { name: req6, per: tenant, requests: 120, every: 1d, models: [m6] }
server:
  decision_deadline: 5s
store:
  topology: cluster
  shard_by: tenant
  timeout: 4s
  breaker: { failures: 1000, open_for: 1s }
settle:
  reservation_ttl: 1m
`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cluster: TestCluster;
let fleetProcs: TollgateProc[] = [];
let clients: EnvoyClient[] = [];

beforeAll(async () => {
  cluster = await startCluster();
  fleetProcs = await Promise.all(
    [0, 1, 2, 3].map(() => spawnTollgate({ yaml: CONFIG, env: { VALKEY_URL: cluster.url } })),
  );
  clients = fleetProcs.map((p) => new EnvoyClient(p.grpcPort));
}, 90_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await Promise.all(fleetProcs.map((p) => p.stop('SIGKILL')));
  await cluster?.stop();
});

const check = (i: number, tenant: string, model: string, maxTokens = 16, deadlineMs = 60_000) =>
  checkWithin(
    clients[i % clients.length],
    { headers: { 'x-tenant-id': tenant }, body: chat(model, CONTENT, { max_tokens: maxTokens }) },
    deadlineMs,
  );
const degraded = (a: CheckAnswer) => a.headers['x-tollgate-degraded'] !== undefined;

/** A key's hash field on the node that owns its slot now. */
async function field(key: string, f: string): Promise<number> {
  const owner = await cluster.slotOwner(keySlot(key));
  return Number((await cluster.client(owner.port).hget(key, f)) ?? 0);
}
const ownerPort = async (key: string) => (await cluster.slotOwner(keySlot(key))).port;

/** A counter summed over the fleet's /metrics. */
async function metric(name: string): Promise<number> {
  let sum = 0;
  for (const p of fleetProcs) {
    const text = await (await fetch(`http://127.0.0.1:${p.httpPort}/metrics`)).text();
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
    sum += m ? Number(m[1]) : 0;
  }
  return sum;
}

/** Deterministic pseudo-random integers in [lo, hi]. */
function costs(n: number, lo: number, hi: number, seed: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return lo + (x % (hi - lo + 1));
  });
}

/** 2,000 concurrent checks, 80 for each of 25 tenants, interleaved over the 4 processes. */
async function burst(prefix: string, model: string, maxTokens: number[]) {
  const tenants = Array.from({ length: 25 }, (_, i) => `${prefix}-${i}`);
  const calls = await Promise.all(
    maxTokens.map(async (m, i) => ({
      tenant: tenants[i % 25],
      m,
      a: await check(i, tenants[i % 25], model, m),
    })),
  );
  for (const c of calls) {
    if (c.a.allowed) expect(degraded(c.a)).toBe(false);
    else expect(c.a.httpStatus).toBe(429);
  }
  return { tenants, calls };
}

const count = <T>(xs: T[], f: (x: T) => boolean) => xs.reduce((n, x) => n + (f(x) ? 1 : 0), 0);

describe('store.topology: cluster, 4 tollgate processes, a real 3+3 Valkey Cluster', {
  timeout: 60_000,
}, () => {
  it('per-tenant limits: 2,000 concurrent checks over 25 tenants on all 3 primaries, exact, one script call each', async () => {
    const TOK = 200_000;
    const probe = await check(0, `p1-${Date.now()}`, 'm1', 1);
    const P = TOK - Number(probe.headers['x-ratelimit-remaining-tokens']) - 1;
    const prefix = `a${Date.now()}`;
    const { tenants, calls } = await burst(prefix, 'm1', costs(2000, 1, 50, 7));
    const owners = new Set(await Promise.all(tenants.map((t) => ownerPort(`tollgate:r:req1:{${t}}`))));
    expect(owners.size).toBe(3);
    for (const t of tenants) {
      const adm = calls.filter((c) => c.tenant === t && c.a.allowed);
      expect(adm.length).toBe(L);
      const v = await field(`tollgate:r:req1:{${t}}`, 'v');
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(1);
      expect(await field(`tollgate:c:tok1:daily:{${t}}`, 'u')).toBe(adm.reduce((s, c) => s + P + c.m, 0));
    }
    for (const c of calls.filter((x) => !x.a.allowed)) expect(c.a.json.limit).toBe('req1');
    expect(await metric('tollgate_store_slot_spanning_checks_total')).toBe(0);
    console.log(
      `[cluster] per-tenant: 2000 calls, ${count(calls, (c) => c.a.allowed)} admitted (25 × 40), owners ${[...owners].join(',')}`,
    );
  });

  it('a global limit in its own slot: all or nothing under 2,000-way concurrency, no debit left by a refusal', async () => {
    const spanning0 = await metric('tollgate_store_slot_spanning_checks_total');
    const compensations0 = await metric('tollgate_store_compensations_total');
    expect(keySlot('tollgate:r:glob2')).not.toBe(keySlot('tollgate:r:req2:{x}'));
    const { tenants, calls } = await burst(`b${Date.now()}`, 'm2', costs(2000, 1, 50, 9));
    const admitted = count(calls, (c) => c.a.allowed);
    expect(admitted).toBeLessThanOrEqual(G);
    const globalLeft = await field('tollgate:r:glob2', 'v');
    // 600 a day refills ~0.007 a second: the bucket holds what the admitted calls left, to the unit
    expect(Math.floor(globalLeft)).toBe(G - admitted);
    let roomy = 0;
    for (const t of tenants) {
      const adm = count(calls, (c) => c.tenant === t && c.a.allowed);
      expect(adm).toBeLessThanOrEqual(L);
      const v = await field(`tollgate:r:req2:{${t}}`, 'v');
      expect(Math.floor(v)).toBe(L - adm);
      if (v >= 1) roomy += count(calls, (c) => c.tenant === t && !c.a.allowed);
    }
    const underAdmitted = Math.min(Math.floor(globalLeft), roomy);
    const spanning = (await metric('tollgate_store_slot_spanning_checks_total')) - spanning0;
    const compensations = (await metric('tollgate_store_compensations_total')) - compensations0;
    // every check that reached the store spanned two slots (repeat denies come from the deny cache)
    expect(spanning).toBeGreaterThan(0);
    console.log(
      `[cluster] global+tenant: admitted ${admitted}/${G}, global left ${globalLeft.toFixed(2)}, refused calls that would have fitted at the end ${underAdmitted}, spanning checks ${spanning}, compensations ${compensations}`,
    );
  });

  it('settle and concurrency release across slots over ext_proc: refund on the tenant, every slot freed', async () => {
    const tenants = Array.from({ length: 4 }, (_, i) => `c${Date.now()}-${i}`);
    const answers = await Promise.all(
      Array.from({ length: 48 }, (_, i) => check(i, tenants[i % 4], 'm3', 500)),
    );
    const ids = answers.map((a) => {
      expect(a.allowed).toBe(true);
      expect(degraded(a)).toBe(false);
      return String(a.raw.dynamic_metadata?.fields?.tollgate_reservation?.stringValue);
    });
    // a cluster reservation id carries the slot of its record (beside the first limit's key)
    ids.forEach((id, i) => {
      expect(id).toMatch(/^[0-9a-z]{1,4}:/);
      expect(keySlot(`{${id.split(':')[0]}}`)).toBe(keySlot(`{${tenants[i % 4]}}`));
    });
    const conc = cluster.client(await ownerPort('tollgate:s:conc3'));
    expect(await conc.zcard('tollgate:s:conc3')).toBe(48);
    const used = () => Promise.all(tenants.map((t) => field(`tollgate:c:tok3:daily:{${t}}`, 'u')));
    // each tenant holds 12 reservations of prompt + 500
    const reserved = (await used())[0] / 12;
    expect(reserved).toBeGreaterThan(500);
    expect(await used()).toEqual(tenants.map(() => 12 * reserved));
    // each response played to another process than the one that allowed it: 17 prompt + 30 output
    await Promise.all(
      answers.map((_, i) =>
        playExtProc(fleetProcs[(i + 1) % 4].grpcPort, {
          id: ids[i],
          headers: { 'content-type': 'application/json' },
          chunks: [chatJson(17, 30)],
        }),
      ),
    );
    const t0 = Date.now();
    while (Date.now() - t0 < 10_000) {
      if ((await used()).every((u) => u === 12 * 47) && (await conc.zcard('tollgate:s:conc3')) === 0) break;
      await sleep(50);
    }
    expect(await used()).toEqual(tenants.map(() => 12 * 47));
    expect(await conc.zcard('tollgate:s:conc3')).toBe(0);
    console.log(
      `[cluster] settle across slots: 48 calls reserved ${reserved} tokens each, settled at 47 in ${Date.now() - t0} ms; concurrency slots freed`,
    );
  });

  it('resharding 500 slots under a steady stream of checks: every check answered, no limit exceeded', async () => {
    const L = 150;
    const prims = await cluster.primaries();
    const from = prims.find((p) => p.slotCount >= 1000)!;
    const to = prims.find((p) => p !== from)!;
    // tenants in the slots valkey-cli moves first (the source's lowest)
    const lo = from.slots[0][0];
    const tenants: string[] = [];
    for (let i = 0; tenants.length < 6; i++) {
      const t = `r${i}`;
      const s = keySlot(`{${t}}`);
      if (s >= lo && s < lo + 500 && s <= from.slots[0][1]) tenants.push(t);
    }
    const answers: { tenant: string; a: CheckAnswer }[] = [];
    let failed = 0;
    let stop = false;
    let n = 0;
    const worker = async (w: number) => {
      while (!stop) {
        const t = tenants[n++ % tenants.length];
        try {
          answers.push({ tenant: t, a: await check(w, t, 'm4', 16, 10_000) });
        } catch {
          failed++;
        }
        await sleep(5);
      }
    };
    const load = Promise.all(Array.from({ length: 4 }, (_, w) => worker(w)));
    await sleep(300);
    const r = await cluster.startReshard({ from: from.port, to: to.port, slots: 500 }).done;
    await sleep(300);
    stop = true;
    await load;
    expect(failed).toBe(0);
    expect(count(answers, (x) => degraded(x.a))).toBe(0);
    expect(count(answers, (x) => !x.a.allowed && x.a.httpStatus !== 429)).toBe(0);
    for (const t of tenants) {
      expect(await ownerPort(`{${t}}`)).toBe(to.port);
      const mine = answers.filter((x) => x.tenant === t);
      const adm = count(mine, (x) => x.a.allowed);
      expect(adm).toBe(Math.min(L, mine.length));
      expect(Math.floor(await field(`tollgate:r:req4:{${t}}`, 'v'))).toBe(L - adm);
    }
    console.log(
      `[cluster] reshard: ${r.slots} slots in ${r.ms} ms under load, ${answers.length} checks answered (${count(answers, (x) => x.a.allowed)} allowed), 0 failed, 0 degraded`,
    );
  });

  it('a primary killed under load: answers keep coming, the replica takes over, enforcement back within 10 s', async () => {
    const L = 20; // group A (m5): over its limit before the kill
    const LB = 120; // group B (m6): debiting when the primary dies
    const victim = await cluster.slotOwner(0);
    const A: string[] = [];
    const B: string[] = [];
    const E: string[] = [];
    for (let i = 0; A.length + B.length < 6 || E.length < 2; i++) {
      const t = `k${Date.now() % 1000}-${i}`;
      if ((await ownerPort(`{${t}}`)) !== victim.port) {
        if (E.length < 2) E.push(t);
      } else if (A.length < 3) A.push(t);
      else if (B.length < 3) B.push(t);
    }
    const onVictim = [...A, ...B];
    const model = (t: string) => (B.includes(t) ? 'm6' : 'm5');
    const limit = (t: string) => (B.includes(t) ? LB : L);
    // B twice in the rotation: ~80 debits each by the kill, the rest of LB after it
    const rotation = [...A, ...B, ...E, ...B];
    const answers: { tenant: string; at: number; ms: number; a: CheckAnswer }[] = [];
    let failed = 0;
    let stop = false;
    let n = 0;
    const worker = async (w: number) => {
      while (!stop) {
        const t = rotation[n++ % rotation.length];
        const t0 = Date.now();
        try {
          const a = await check(w, t, model(t), 16, 10_000);
          answers.push({ tenant: t, at: t0, ms: Date.now() - t0, a });
        } catch {
          failed++;
        }
        await sleep(5);
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    const t0 = Date.now();
    while (A.some((t) => count(answers, (x) => x.tenant === t) < 2 * L) && Date.now() - t0 < 15_000)
      await sleep(50);
    const usedAtKill = B.map((t) => count(answers, (x) => x.tenant === t && x.a.allowed));
    expect(Math.max(...usedAtKill)).toBeLessThan(LB);
    const kill = Date.now();
    const k = await cluster.killPrimary(victim.port);
    expect(k.newPrimaryPort).not.toBe(victim.port);
    // enforcement back: after the kill, each victim tenant got a non-degraded 429 after its last allow
    const deniedAgain = (ts: string[]) => {
      const after = answers.filter((x) => x.at > kill && ts.includes(x.tenant));
      const lastAllow = Math.max(kill, ...after.filter((x) => x.a.allowed).map((x) => x.at + x.ms));
      const ok = ts.every((t) =>
        after.some((x) => x.tenant === t && x.at > lastAllow && !x.a.allowed && !degraded(x.a)),
      );
      return ok ? lastAllow : 0;
    };
    let back = 0;
    let backB = 0;
    while (Date.now() - kill < 20_000 && !(back && backB)) {
      await sleep(200);
      back ||= deniedAgain(A);
      backB ||= deniedAgain(B);
    }
    await sleep(500);
    stop = true;
    await load;
    expect(back).toBeGreaterThan(0);
    expect(backB).toBeGreaterThan(0);
    const backMs = back - kill;
    expect(backMs).toBeLessThan(10_000);
    expect(backB - kill).toBeLessThan(10_000);
    expect(failed).toBe(0);
    const slowest = Math.max(...answers.map((x) => x.ms));
    expect(slowest).toBeLessThan(5_500);
    for (const x of answers) expect(x.a.allowed || x.a.httpStatus === 429).toBe(true);
    // the store answers again: the first non-degraded answer for a debiting tenant after the kill (the
    // over-limit ones are answered from the deny cache throughout); the last degraded answer
    const served = Math.min(
      ...answers.filter((x) => x.at > kill && B.includes(x.tenant) && !degraded(x.a)).map((x) => x.at + x.ms),
    );
    const lastDegraded = Math.max(kill, ...answers.filter((x) => degraded(x.a)).map((x) => x.at + x.ms));
    const outage = count(
      answers,
      (x) => x.at >= kill - 1000 && x.at <= served && onVictim.includes(x.tenant),
    );
    let over = 0;
    let failOpen = 0;
    for (const t of onVictim) {
      const mine = answers.filter((x) => x.tenant === t);
      over += Math.max(0, count(mine, (x) => x.a.allowed) - limit(t));
      failOpen += count(mine, (x) => x.a.allowed && degraded(x.a));
    }
    for (const t of B) expect(Math.floor(await field(`tollgate:r:req6:{${t}}`, 'v'))).toBe(0);
    // the other primaries' tenants: never over their limit (fail-open allows aside)
    for (const t of E)
      expect(count(answers, (x) => x.tenant === t && x.a.allowed && !degraded(x.a))).toBeLessThanOrEqual(L);
    expect(over).toBeLessThanOrEqual(outage);
    console.log(
      `[cluster] primary kill: promoted in ${k.promotedMs} ms, converged in ${k.ms} ms, store serving the victim's slots again ${served - kill} ms after the kill (last degraded answer at ${lastDegraded - kill} ms), enforcement back ${backMs} ms after the kill for the over-limit tenants (0: never allowed again), ${backB - kill} ms for those debiting at the kill (${usedAtKill.join('/')} of ${LB} used); over-admission ${over} on 6 tenants (${failOpen} fail-open allows, ${over - failOpen} beyond: lost debits), ${outage} checks for them from 1 s before the kill to the store serving again; slowest answer ${slowest} ms`,
    );
  });
});
