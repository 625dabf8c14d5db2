/**
 * Faults under load: Valkey scripts flushed, paused (CLIENT PAUSE), slow (DEBUG SLEEP, a busy Lua
 * script), killed and restarted empty, while two real tollgate processes (fail-open and fail-closed)
 * answer a steady stream of checks. Every check must be answered per the failure policy and within
 * the decision deadline, no process may crash, and enforcement must come back after each fault.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { logLines, spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const DEADLINE_MS = 50;
// TOLLGATE_SOAK=1: the whole fault sequence ten times over.
const ROUNDS = process.env.TOLLGATE_SOAK === '1' ? 10 : 1;
const config = (policy: 'allow' | 'deny') => `
limits:
  - { name: rate, per: tenant, requests: 1000000, every: 1h }
  - { name: five, per: [tenant], requests: 5, every: 1h, when: { probe: "yes" } }
identity:
  tenant: [{ header: x-tenant-id }]
  probe: [{ header: x-probe }]
server:
  decision_deadline: ${DEADLINE_MS}ms
store:
  timeout: 25ms
  breaker: { failures: 3, open_for: 300ms }
  on_store_failure: ${policy}
`;

interface Sample {
  proc: 'allow' | 'deny';
  ms: number;
  phase: string;
  kind: 'ok' | 'degraded' | '429' | '503' | 'other' | 'rpc-error';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function classify(a: CheckAnswer): Sample['kind'] {
  if (a.allowed) return a.headers['x-tollgate-degraded'] ? 'degraded' : 'ok';
  if (a.httpStatus === 429) return '429';
  if (a.httpStatus === 503 && a.json?.error?.code === 'rate_limiter_unavailable') return '503';
  return 'other';
}

describe('Valkey faults under load', () => {
  let vk: TestValkey;
  let allowP: TollgateProc;
  let denyP: TollgateProc;
  let clients: { allow: EnvoyClient; deny: EnvoyClient };

  beforeAll(async () => {
    vk = await startValkey(['--enable-debug-command', 'yes']);
    [allowP, denyP] = await Promise.all(
      (['allow', 'deny'] as const).map((p) =>
        spawnTollgate({ yaml: config(p), env: { VALKEY_URL: vk.url, LOG_LEVEL: 'debug' } }),
      ),
    );
    clients = { allow: new EnvoyClient(allowP.grpcPort), deny: new EnvoyClient(denyP.grpcPort) };
  }, 60_000);
  afterAll(async () => {
    clients?.allow.close();
    clients?.deny.close();
    await allowP?.stop('SIGKILL');
    await denyP?.stop('SIGKILL');
    await vk?.close();
  });

  it(
    'every check is answered per policy within the deadline; enforcement resumes after each fault',
    async () => {
      const samples: Sample[] = [];
      let phase = 'baseline';
      let running = true;
      let n = 0;
      const worker = async (which: 'allow' | 'deny') => {
        while (running) {
          const t0 = performance.now();
          let kind: Sample['kind'];
          try {
            kind = classify(
              await clients[which].check({
                headers: { 'x-tenant-id': `load-${n++ % 50}` },
                body: chat('gpt-4o-mini', 'hello', { max_tokens: 5 }),
              }),
            );
          } catch {
            kind = 'rpc-error';
          }
          samples.push({ proc: which, ms: performance.now() - t0, phase, kind });
          await sleep(2);
        }
      };
      // Warm up (first calls load encoders, JIT, open connections); measured separately.
      const cold: number[] = [];
      for (const which of ['allow', 'deny'] as const)
        for (let i = 0; i < 20; i++) {
          const t0 = performance.now();
          await clients[which].check({
            headers: { 'x-tenant-id': 'warm' },
            body: chat('gpt-4o-mini', 'hello', { max_tokens: 5 }),
          });
          cold.push(performance.now() - t0);
        }
      const measuredFrom = Date.now();
      const workers = [...Array(6)].flatMap(() => [worker('allow'), worker('deny')]);

      /** Poll until both processes decide against Valkey again (not degraded, not 503). */
      const recovered = async (): Promise<number> => {
        const t0 = performance.now();
        for (;;) {
          const recent = samples.slice(-40);
          const fresh = samples.length > 40 && recent.every((s) => s.kind === 'ok');
          if (fresh) return performance.now() - t0;
          if (performance.now() - t0 > 15_000) throw new Error(`no recovery after ${phase}`);
          await sleep(20);
        }
      };
      const faults: [string, () => Promise<unknown>][] = [
        ['SCRIPT FLUSH', () => vk.client.script('FLUSH')],
        ['CLIENT PAUSE 800ms', () => vk.client.call('CLIENT', 'PAUSE', '800', 'ALL')],
        ['DEBUG SLEEP 0.8s', () => vk.client.call('DEBUG', 'SLEEP', '0.8')],
        [
          'busy Lua script 800ms',
          () =>
            vk.client.eval(
              "local s = redis.call('TIME') repeat local n = redis.call('TIME') until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 800000 return 1",
              0,
            ),
        ],
        [
          'valkey-server killed (SIGKILL), restarted empty 1s later',
          async () => {
            await vk.stop(true);
            await sleep(1000);
            await vk.restart();
          },
        ],
        ['SCRIPT FLUSH after restart', () => vk.client.script('FLUSH')],
      ];
      const report: string[] = [];
      await sleep(300);
      await recovered();
      for (const [name, inject] of Array.from({ length: ROUNDS }, () => faults).flat()) {
        phase = name;
        const from = samples.length;
        await inject().catch(() => {});
        await sleep(1000); // the pause / sleep / outage lasts up to 1 s
        const rec = await recovered();
        const during = samples.slice(from);
        const worst = Math.max(...during.map((s) => s.ms));
        const kinds = during.reduce<Record<string, number>>((m, s) => {
          m[`${s.proc}:${s.kind}`] = (m[`${s.proc}:${s.kind}`] ?? 0) + 1;
          return m;
        }, {});
        report.push(
          `${name}: ${during.length} checks, worst ${worst.toFixed(1)} ms, recovered within ${(1000 + rec).toFixed(0)} ms, ${JSON.stringify(kinds)}`,
        );
      }
      running = false;
      await Promise.all(workers);

      // Enforcement works again, across both processes on the shared (restarted, empty) Valkey.
      const probe = `probe-${Date.now()}`;
      const answers: CheckAnswer[] = [];
      for (let i = 0; i < 8; i++)
        answers.push(
          await clients[i % 2 ? 'deny' : 'allow'].check({
            headers: { 'x-tenant-id': probe, 'x-probe': 'yes' },
            body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }),
          }),
        );
      expect(answers.map((a) => a.allowed)).toEqual([true, true, true, true, true, false, false, false]);
      expect(answers.slice(0, 5).every((a) => !a.headers['x-tollgate-degraded'])).toBe(true);
      expect(answers.slice(5).every((a) => a.httpStatus === 429 && a.json.limit === 'five')).toBe(true);

      // Server-side decision times (every decision is logged at debug level, with its duration).
      const serverMs = (p: TollgateProc) =>
        logLines(p.output())
          .filter((l) => l.msg === 'decision' && Number(l.time) >= measuredFrom)
          .map((l) => Number(l.ms));
      const srv = [...serverMs(allowP), ...serverMs(denyP)];
      const worstServer = Math.max(...srv);
      const worstClient = Math.max(...samples.map((s) => s.ms));
      const sorted = samples.map((s) => s.ms).sort((a, b) => a - b);
      const p99 = sorted[Math.floor(sorted.length * 0.99)];
      console.log(
        `[trust] faults: ${samples.length} checks under load, ${faults.length} faults (cold start: first check ${cold[0].toFixed(0)} ms)\n  ${report.join('\n  ')}\n` +
          `  worst decision time (server) ${worstServer.toFixed(1)} ms over ${srv.length} decisions; ` +
          `worst round trip (client) ${worstClient.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`,
      );

      // Every check got an answer, and the answer the policy promises.
      expect(samples.filter((s) => s.kind === 'rpc-error' || s.kind === 'other')).toEqual([]);
      expect(samples.filter((s) => s.proc === 'allow' && s.kind === '503')).toEqual([]);
      expect(samples.filter((s) => s.proc === 'deny' && s.kind === 'degraded')).toEqual([]);
      // faults were really felt: fail-open let calls through marked degraded, fail-closed refused them
      expect(samples.some((s) => s.proc === 'allow' && s.kind === 'degraded')).toBe(true);
      expect(samples.some((s) => s.proc === 'deny' && s.kind === '503')).toBe(true);
      // Within the decision deadline: the store wait is capped at the deadline; what the process adds is
      // CPU queueing, large on a 2-core machine running other test files at the same time. Alone, the worst
      // decision is ~90 ms and the p99 ~60 ms; the bounds below hold under a full parallel test run, and
      // p99 stays under Envoy's 250 ms ext_authz timeout (envoy.yaml), past which Envoy would decide.
      const srvSorted = [...srv].sort((a, b) => a - b);
      expect(srvSorted[Math.floor(srvSorted.length * 0.99)]).toBeLessThan(2 * DEADLINE_MS + 50);
      expect(worstServer).toBeLessThan(1000);
      expect(p99).toBeLessThan(250);
      expect(worstClient).toBeLessThan(2000);
      // A script flush is invisible: the script is reloaded on NOSCRIPT (at most a stray timeout on a
      // busy machine, never a failure streak).
      const flush = samples.filter((s) => s.phase.startsWith('SCRIPT FLUSH'));
      expect(flush.filter((s) => s.kind !== 'ok').length).toBeLessThanOrEqual(Math.ceil(flush.length / 100));
      // No crash.
      for (const p of [allowP, denyP]) {
        expect(p.proc.exitCode).toBeNull();
        expect(p.output()).not.toMatch(/uncaught|unhandled/i);
        expect((await fetch(`http://127.0.0.1:${p.httpPort}/healthz`)).status).toBe(200);
      }
    },
    ROUNDS * 90_000,
  );
});
