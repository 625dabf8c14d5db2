/**
 * Lifecycle under load: configuration reloads (SIGHUP and file swaps) never show a call a half-applied
 * config; SIGTERM lets in-flight checks finish with real decisions, and a replacement process carries
 * on from the shared state.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { logLines, spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let vk: TestValkey;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});

describe('config reload during load', () => {
  const version = (v: 'a' | 'b') => {
    const k = v === 'a' ? 1 : 2;
    return `
limits:
  - { name: requests-${v}, per: tenant, requests: ${1000 * k}, every: 1m }
  - { name: tokens-${v}, per: tenant, tokens: ${100_000 * k}, every: 1m }
  - { name: spend-${v}, per: tenant, usd: ${10 * k}, reset: daily }
models:
  gpt-4o-mini: { price_usd_per_1m: { input: 1, output: 1 } }
  "*": { price_usd_per_1m: { input: 1, output: 1 } }
# generous: this test is about config consistency, not latency (no fail-open on a busy machine)
server: { decision_deadline: 3s }
store: { timeout: 2s }
`;
  };
  let p: TollgateProc;
  afterAll(async () => {
    await p?.stop('SIGKILL');
  });

  it('every decision uses one whole config, old or new, never a mix', async () => {
    p = await spawnTollgate({ yaml: version('a'), env: { VALKEY_URL: vk.url } });
    const c = new EnvoyClient(p.grpcPort);
    const seen = new Map<string, number>();
    let bad: CheckAnswer | undefined;
    let running = true;
    let calls = 0;
    const worker = async (w: number) => {
      while (running) {
        const a = await c.check({
          headers: { 'x-tenant-id': `reload-${w}-${calls++ % 7}` },
          body: chat('gpt-4o-mini', 'hi', { max_tokens: 3 }),
        });
        const sig = [
          a.headers['x-ratelimit-limit-requests'],
          a.headers['x-ratelimit-limit-tokens'],
          a.allowed ? 'allow' : a.httpStatus,
        ].join('/');
        seen.set(sig, (seen.get(sig) ?? 0) + 1);
        if (!['1000/100000/allow', '2000/200000/allow'].includes(sig)) bad ??= a;
      }
    };
    // warm up (first check loads the token workers), then load
    expect(
      (await c.check({ headers: { 'x-tenant-id': 'warm' }, body: chat('gpt-4o-mini', 'hi') })).allowed,
    ).toBe(true);
    const workers = [...Array(8)].map((_, i) => worker(i));
    // Swap the file atomically (write + rename, as a ConfigMap does) and send SIGHUP in between; once,
    // an invalid file, which must be refused while the running config stays.
    const tmp = `${p.configFile}.tmp`;
    const t0 = Date.now();
    let swaps = 0;
    while ((Date.now() - t0 < 4000 || calls < 400) && Date.now() - t0 < 20_000) {
      swaps++;
      const text =
        swaps === 10 ? 'limits: [ { name: broken, requests: -1 } ]' : version(swaps % 2 ? 'b' : 'a');
      writeFileSync(tmp, text);
      renameSync(tmp, p.configFile);
      for (let i = 0; i < 4; i++) {
        p.proc.kill('SIGHUP');
        await sleep(40);
      }
    }
    running = false;
    await Promise.all(workers);
    c.close();
    const logs = logLines(p.output());
    const reloads = logs.filter((l) => l.msg === 'configuration reloaded').length;
    const refused = logs.filter((l) => String(l.msg).startsWith('configuration reload failed')).length;
    console.log(
      `[trust] reload: ${calls} checks during ${swaps} file swaps, ${reloads} reloads, ${refused} refused; answers ${JSON.stringify(Object.fromEntries(seen))}`,
    );
    expect(bad).toBeUndefined();
    expect(seen.get('1000/100000/allow')).toBeGreaterThan(50);
    expect(seen.get('2000/200000/allow')).toBeGreaterThan(50);
    expect(reloads).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(0);
    expect(p.proc.exitCode).toBeNull();
  }, 30_000);
});

describe('SIGTERM under load', () => {
  const CONFIG = `
limits:
  - { name: daily, per: tenant, requests: 100000, reset: daily }
server:
  decision_deadline: 4s
store:
  timeout: 3s
`;
  const procs: TollgateProc[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  });

  it('in-flight checks finish with real decisions; the replacement continues the same accounting', async () => {
    const first = await spawnTollgate({ yaml: CONFIG, env: { VALKEY_URL: vk.url } });
    procs.push(first);
    const tenant = `term-${Date.now()}`;
    const check = (c: EnvoyClient) =>
      c.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }) });
    const c1 = new EnvoyClient(first.grpcPort);
    expect((await check(c1)).headers['x-ratelimit-remaining-requests']).toBe('99999');

    // Hold every check inside Valkey for a while so that they are in flight when SIGTERM lands.
    await vk.client.call('CLIENT', 'PAUSE', '1500', 'WRITE');
    const inflight = Array.from({ length: 50 }, () => check(c1));
    await sleep(400);
    const t0 = performance.now();
    first.proc.kill('SIGTERM');
    const answers = await Promise.all(inflight);
    const exit = await first.exited;
    const drainMs = performance.now() - t0;
    // Every in-flight call got a real decision (debited in Valkey, not a fail-open).
    expect(answers.every((a) => a.allowed && !a.headers['x-tollgate-degraded'])).toBe(true);
    const remaining = answers
      .map((a) => Number(a.headers['x-ratelimit-remaining-requests']))
      .sort((a, b) => a - b);
    expect(remaining).toEqual(Array.from({ length: 50 }, (_, i) => 99_949 + i));
    expect(exit.code).toBe(0);
    expect(first.output()).toMatch(/draining in-flight checks/);
    c1.close();

    // A replacement on the same ports picks up where the first left off.
    const second = await spawnTollgate({
      yaml: CONFIG,
      env: { VALKEY_URL: vk.url },
      grpcPort: first.grpcPort,
      httpPort: first.httpPort,
    });
    procs.push(second);
    const c2 = new EnvoyClient(second.grpcPort);
    const next = await check(c2);
    expect(next.allowed).toBe(true);
    expect(next.headers['x-ratelimit-remaining-requests']).toBe('99948');
    c2.close();
    console.log(
      `[trust] SIGTERM: 50 in-flight checks all answered and debited; drained and exited 0 in ${drainMs.toFixed(0)} ms`,
    );
  }, 30_000);
});
