/**
 * Concurrency: many replicas, one Valkey, one tenant, a burst far above the limit. Admission must be
 * exact (never one call too many, and no call refused that fitted), and the state left in Valkey must
 * equal what the admitted calls cost.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MemoryStore } from '../src/store/memory.js';
import { EntryKind } from '../src/store/types.js';
import { checkWithin } from './helpers/answer.js';
import { startTestApp } from './helpers/app.js';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const REQUESTS = 500;
const TOKENS = 200_000;
// Limits that do not refill during the burst (requests: 500 per day ≈ 0.006/s; tokens: a calendar quota),
// and timeouts generous enough that no call is let through unmetered by the failure policy: this is a
// test of atomicity, the fault tests cover deadlines.
const CONFIG = `
models:
  "*": { encoding: cl100k_base, default_max_output_tokens: 16 }
limits:
  - { name: req, per: tenant, requests: ${REQUESTS}, every: 1d }
  - { name: tok, per: tenant, tokens: ${TOKENS}, reset: daily }
server:
  decision_deadline: 5s
store:
  timeout: 4s
  breaker: { failures: 1000, open_for: 1s }
`;
// TOLLGATE_SOAK=1: ten times the burst.
const SOAK = process.env.TOLLGATE_SOAK === '1';
const CALLS = SOAK ? 20_000 : 2000;
const CONTENT = 'How many tokens is this?';

interface Call {
  maxTokens: number;
  answer: CheckAnswer;
}

/** Deterministic pseudo-random max_tokens. */
function costs(n: number, lo: number, hi: number, seed: number): number[] {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return lo + (x % (hi - lo + 1));
  });
}

async function burst(clients: EnvoyClient[], tenant: string, maxTokens: number[]): Promise<Call[]> {
  return Promise.all(
    maxTokens.map(async (m, i) => ({
      maxTokens: m,
      answer: await checkWithin(
        clients[i % clients.length],
        { headers: { 'x-tenant-id': tenant }, body: chat('some-model', CONTENT, { max_tokens: m }) },
        60_000,
      ),
    })),
  );
}

/** Prompt tokens of CONTENT as tollgate counts them, from one call's remaining-tokens header. */
async function promptTokens(c: EnvoyClient): Promise<number> {
  const a = await c.check({
    headers: { 'x-tenant-id': `probe-${Date.now()}` },
    body: chat('some-model', CONTENT, { max_tokens: 1 }),
  });
  expect(a.allowed).toBe(true);
  return TOKENS - Number(a.headers['x-ratelimit-remaining-tokens']) - 1;
}

function checkAnswers(calls: Call[]): void {
  for (const c of calls) {
    if (c.answer.allowed) expect(c.answer.headers['x-tollgate-degraded']).toBeUndefined();
    else expect(c.answer.httpStatus).toBe(429);
  }
}

describe('4 tollgate processes, one valkey-server, 2,000 concurrent checks for one tenant', {
  timeout: SOAK ? 600_000 : 60_000,
}, () => {
  let vk: TestValkey;
  const procs: TollgateProc[] = [];
  const clients: EnvoyClient[] = [];
  let P = 0;

  beforeAll(async () => {
    vk = await startValkey();
    procs.push(
      ...(await Promise.all(
        [0, 1, 2, 3].map(() => spawnTollgate({ yaml: CONFIG, env: { VALKEY_URL: vk.url } })),
      )),
    );
    clients.push(...procs.map((p) => new EnvoyClient(p.grpcPort)));
    P = await promptTokens(clients[0]);
  }, 60_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await vk?.close();
  });

  it('request-bound: admits exactly the request limit; Valkey holds exactly the admitted cost', async () => {
    const tenant = `req-${Date.now()}`;
    const calls = await burst(clients, tenant, costs(CALLS, 1, 50, 7));
    checkAnswers(calls);
    const admitted = calls.filter((c) => c.answer.allowed);
    const spent = admitted.reduce((s, c) => s + P + c.maxTokens, 0);
    console.log(`[trust] 4 procs request-bound: ${CALLS} calls, admitted ${admitted.length}/${REQUESTS}`);
    expect(admitted.length).toBe(REQUESTS);
    expect(spent).toBeLessThanOrEqual(TOKENS);
    for (const c of calls.filter((x) => !x.answer.allowed)) expect(c.answer.json.limit).toBe('req');
    // every process took part
    const perProc = [0, 1, 2, 3].map((p) => admitted.filter((_, i) => i % 4 === p).length);
    expect(perProc.every((n) => n > 0)).toBe(true);
    // Valkey state: request bucket empty (a day-long window refills ~0.006 requests/s), tokens used = spent
    const v = Number(await vk.client.hget(`tollgate:r:req:${tenant}`, 'v'));
    expect(v).toBeGreaterThanOrEqual(0);
    expect(v).toBeLessThan(1);
    expect(Number(await vk.client.hget(`tollgate:c:tok:daily:${tenant}`, 'u'))).toBe(spent);
  });

  it('token-bound: admitted tokens never exceed the limit; every refusal was needed; Valkey agrees', async () => {
    const tenant = `tok-${Date.now()}`;
    const calls = await burst(clients, tenant, costs(CALLS, 100, 2000, 11));
    checkAnswers(calls);
    const admitted = calls.filter((c) => c.answer.allowed);
    const spent = admitted.reduce((s, c) => s + P + c.maxTokens, 0);
    console.log(
      `[trust] 4 procs token-bound: ${CALLS} calls, admitted ${admitted.length}, tokens ${spent}/${TOKENS}`,
    );
    expect(spent).toBeLessThanOrEqual(TOKENS);
    expect(admitted.length).toBeLessThan(REQUESTS);
    const used = Number(await vk.client.hget(`tollgate:c:tok:daily:${tenant}`, 'u'));
    expect(used).toBe(spent);
    // Tokens only ever went down during the burst, so a refused call did not fit even at the end:
    // nothing was refused that the limit had room for.
    const left = TOKENS - used;
    for (const c of calls.filter((x) => !x.answer.allowed)) {
      expect(c.answer.json.limit).toBe('tok');
      expect(P + c.maxTokens).toBeGreaterThan(left);
    }
    const v = Number(await vk.client.hget(`tollgate:r:req:${tenant}`, 'v'));
    expect(Math.round(v)).toBe(REQUESTS - admitted.length);
  });
});

describe('in-memory store, one process, 2,000 concurrent checks for one tenant', {
  timeout: SOAK ? 600_000 : 60_000,
}, () => {
  let app: Awaited<ReturnType<typeof startTestApp>>;
  let client: EnvoyClient;
  let P = 0;
  beforeAll(async () => {
    app = await startTestApp(CONFIG, { tokenWorkers: 2 });
    client = new EnvoyClient(app.grpcPort);
    P = await promptTokens(client);
  });
  afterAll(async () => {
    client?.close();
    await app?.close(1000);
  });

  const state = async (tenant: string) => {
    const store = app.store as MemoryStore;
    const r = await store.check({
      keys: [`tollgate:r:req:${tenant}`, `tollgate:c:tok:daily:${tenant}`],
      candidates: [
        [
          {
            key: 0,
            kind: EntryKind.Rolling,
            capacity: REQUESTS,
            period: 86_400_000,
            tzOffsetMin: 0,
            cost: 0,
            shadow: false,
            downgradeAt: 0,
          },
          {
            key: 1,
            kind: EntryKind.Calendar,
            capacity: TOKENS,
            period: 2,
            tzOffsetMin: 0,
            cost: 0,
            shadow: false,
            downgradeAt: 0,
          },
        ],
      ],
      dryRun: true,
    });
    return { requests: r.candidates[0][0].remaining, tokens: r.candidates[0][1].remaining };
  };

  it('request-bound and token-bound bursts admit exactly what fits', async () => {
    expect(app.store.kind).toBe('memory');
    const t1 = `mreq-${Date.now()}`;
    const a = await burst([client], t1, costs(CALLS, 1, 50, 3));
    checkAnswers(a);
    const adm1 = a.filter((c) => c.answer.allowed);
    expect(adm1.length).toBe(REQUESTS);
    const spent1 = adm1.reduce((s, c) => s + P + c.maxTokens, 0);
    expect(await state(t1)).toEqual({ requests: 0, tokens: TOKENS - spent1 });

    const t2 = `mtok-${Date.now()}`;
    const b = await burst([client], t2, costs(CALLS, 100, 2000, 5));
    checkAnswers(b);
    const adm2 = b.filter((c) => c.answer.allowed);
    const spent2 = adm2.reduce((s, c) => s + P + c.maxTokens, 0);
    expect(spent2).toBeLessThanOrEqual(TOKENS);
    const st = await state(t2);
    expect(st).toEqual({ requests: REQUESTS - adm2.length, tokens: TOKENS - spent2 });
    for (const c of b.filter((x) => !x.answer.allowed)) expect(P + c.maxTokens).toBeGreaterThan(st.tokens);
    console.log(
      `[trust] memory store: ${2 * CALLS} calls, admitted ${adm1.length} (request-bound) and ${adm2.length} (${spent2}/${TOKENS} tokens)`,
    );
  });
});
