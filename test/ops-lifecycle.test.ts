/**
 * Issue #5, configuration lifecycle and shutdown, on the real CLI process (`node dist/src/cli.js
 * serve`) with a real Valkey: hot reload on file change (also a Kubernetes ConfigMap symlink swap)
 * and on SIGHUP, during traffic; a bad file keeps the old config; limit state survives; SIGTERM
 * drains in-flight checks and exits 0.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HealthProbe, jsonLines, killAll, type Proc, scrape, serve, until } from './fixtures/ops/ops.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const V1 = `
limits:
  - name: tenant-requests
    per: tenant
    requests: 1000
    every: 1h
`;
const V2 = `${V1}  - name: tenant-tokens
    per: tenant
    tokens: 500000
    every: 1h
`;
const BAD = `${V1}  - name: tenant-tokens
    per: tenant
    tokens: -5
    every: 1q
`;

let vk: TestValkey;
let dir: string;
beforeAll(async () => {
  vk = await startValkey();
  dir = mkdtempSync(join(tmpdir(), 'tollgate-ops-'));
});
afterAll(async () => {
  killAll();
  await vk?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Checks in a loop until stopped; every answer must be a real decision (no RPC error). */
function traffic(port: number, tenant: string) {
  const client = new EnvoyClient(port);
  let stop = false;
  let ok = 0;
  const errors: string[] = [];
  const done = (async () => {
    while (!stop) {
      try {
        const a = await client.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o', 'hi') });
        if (a.allowed) ok++;
        else errors.push(`denied ${a.httpStatus}`);
      } catch (err) {
        errors.push((err as Error).message);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  return {
    async end() {
      stop = true;
      await done;
      client.close();
      return { ok, errors };
    },
  };
}

describe('hot reload', () => {
  let p: Proc;
  let file: string;
  let envoy: EnvoyClient;
  const tenant = `reload-${Date.now()}`;
  const call = () => envoy.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o', 'hi') });
  const reloads = async (result: string) =>
    (await scrape(p.httpPort)).value('tollgate_config_reloads_total', { result });

  beforeAll(async () => {
    file = join(dir, 'tollgate.yaml');
    writeFileSync(file, V1);
    p = await serve(file, { VALKEY_URL: vk.url });
    envoy = new EnvoyClient(p.grpcPort);
  });
  afterAll(async () => {
    envoy?.close();
    p?.kill();
  });

  it('file changes: a good file applies, a bad one is refused, counted and logged; SIGHUP reloads; state survives', async () => {
    const load = traffic(p.grpcPort, `${tenant}-bg`);
    const first = await call();
    expect(first.headers['x-ratelimit-remaining-requests']).toBe('999');
    expect(first.headers['x-ratelimit-limit-tokens']).toBeUndefined();

    // good file: the new limit applies, the request budget already spent in Valkey carries over
    writeFileSync(file, V2);
    await until(async () => (await reloads('success')) === 1, 5000, 'reload success');
    const second = await call();
    expect(second.headers['x-ratelimit-limit-tokens']).toBe('500000');
    expect(second.headers['x-ratelimit-remaining-requests']).toBe('998');

    // bad file: refused, counted, logged with the reason; the running config keeps deciding
    writeFileSync(file, BAD);
    await until(async () => (await reloads('failure')) === 1, 5000, 'reload failure');
    const m = await scrape(p.httpPort);
    expect(m.value('tollgate_config_last_reload_successful')).toBe(0);
    expect(m.value('tollgate_config_reloads_total', { result: 'success' })).toBe(1);
    const third = await call();
    expect(third.allowed).toBe(true);
    expect(third.headers['x-ratelimit-limit-tokens']).toBe('500000');
    expect(third.headers['x-ratelimit-remaining-requests']).toBe('997');
    const failed = jsonLines(p.output()).find((l) => l.msg?.startsWith('configuration reload failed'));
    expect(failed?.level).toBe(50);
    expect(failed?.err).toMatch(/limits\[1\]\.tokens: expected an integer/);
    expect(failed?.err).toMatch(/limits\[1\]\.every: expected a duration/);

    // SIGHUP re-reads the file even when no file event happened (still bad: a second failure)
    p.proc.kill('SIGHUP');
    await until(async () => (await reloads('failure')) === 2, 5000, 'SIGHUP reload');

    // fixed again
    writeFileSync(file, V1);
    await until(async () => (await reloads('success')) === 2, 5000, 'second reload success');
    const fourth = await call();
    expect(fourth.headers['x-ratelimit-limit-tokens']).toBeUndefined();
    expect(fourth.headers['x-ratelimit-remaining-requests']).toBe('996');
    expect((await scrape(p.httpPort)).value('tollgate_config_last_reload_successful')).toBe(1);

    const { ok, errors } = await load.end();
    expect(errors).toEqual([]);
    expect(ok).toBeGreaterThan(10);
    expect(p.proc.exitCode).toBeNull();
  });

  it('a Kubernetes ConfigMap update (atomic ..data symlink swap) is picked up', async () => {
    // The kubelet's AtomicWriter layout: tollgate.yaml -> ..data/tollgate.yaml, ..data -> ..<timestamp>
    const cm = join(dir, 'configmap');
    mkdirSync(join(cm, '..2024_01_01_00_00_00.1'), { recursive: true });
    writeFileSync(join(cm, '..2024_01_01_00_00_00.1', 'tollgate.yaml'), V1);
    symlinkSync('..2024_01_01_00_00_00.1', join(cm, '..data'));
    symlinkSync('..data/tollgate.yaml', join(cm, 'tollgate.yaml'));
    const k = await serve(join(cm, 'tollgate.yaml'));
    const client = new EnvoyClient(k.grpcPort);
    try {
      const before = await client.check({ headers: { 'x-tenant-id': 'cm' }, body: chat('gpt-4o', 'hi') });
      expect(before.headers['x-ratelimit-limit-tokens']).toBeUndefined();
      mkdirSync(join(cm, '..2024_01_01_00_01_00.2'));
      writeFileSync(join(cm, '..2024_01_01_00_01_00.2', 'tollgate.yaml'), V2);
      symlinkSync('..2024_01_01_00_01_00.2', join(cm, '..data_tmp'));
      renameSync(join(cm, '..data_tmp'), join(cm, '..data'));
      rmSync(join(cm, '..2024_01_01_00_00_00.1'), { recursive: true });
      await until(
        async () =>
          (await scrape(k.httpPort)).value('tollgate_config_reloads_total', { result: 'success' }) === 1,
        5000,
        'reload after the symlink swap',
      );
      const after = await client.check({ headers: { 'x-tenant-id': 'cm' }, body: chat('gpt-4o', 'hi') });
      expect(after.headers['x-ratelimit-limit-tokens']).toBe('500000');
    } finally {
      client.close();
      k.kill();
    }
  });
});

describe('SIGTERM', () => {
  const SLOW = `${V1}server: { decision_deadline: 5s }\nstore: { timeout: 4s }\n`;

  it('NOT_SERVING at once, new calls refused, every in-flight call answered, Valkey closed, exit 0', async () => {
    const file = join(dir, 'slow.yaml');
    writeFileSync(file, SLOW);
    const p = await serve(file, { VALKEY_URL: vk.url, TOLLGATE_SHUTDOWN_GRACE_MS: '8000' });
    const health = new HealthProbe(p.grpcPort);
    const watch = health.watch('');
    const envoy = new EnvoyClient(p.grpcPort);
    const tenant = `drain-${Date.now()}`;
    try {
      await until(() => watch.statuses.length === 1, 2000, 'first Watch message');
      // Hold every Valkey answer for 1.5 s so that 20 checks are in flight when SIGTERM lands.
      await vk.client.call('CLIENT', 'PAUSE', '1500', 'ALL');
      const calls = Array.from({ length: 20 }, () =>
        envoy.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o', 'hi') }),
      );
      await until(
        async () => (await scrape(p.httpPort)).value('tollgate_inflight_checks') === 20,
        1400,
        '20 in flight',
      );
      const signalled = Date.now();
      p.proc.kill('SIGTERM');

      await until(() => watch.statuses.includes('NOT_SERVING'), 1000, 'NOT_SERVING on the Watch stream');
      const ready = await fetch(`http://127.0.0.1:${p.httpPort}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: 'not-ready', draining: true, inflight: 20 });
      const late = new EnvoyClient(p.grpcPort);
      await expect(
        late.checkRaw({ attributes: { request: { http: { path: '/v1/models' } } } }, 1000),
      ).rejects.toMatchObject({ code: 14 });
      late.close();

      const answers = await Promise.all(calls);
      expect(answers.every((a) => a.allowed && !a.upstream['x-tollgate-degraded'])).toBe(true);
      expect(
        answers.map((a) => Number(a.headers['x-ratelimit-remaining-requests'])).sort((a, b) => b - a),
      ).toEqual(Array.from({ length: 20 }, (_, i) => 999 - i));
      const exit = await p.exited;
      expect(exit).toEqual({ code: 0, signal: null });
      // Exits once the calls are done, not at the end of the 8 s grace (an open Watch stream must
      // not hold the graceful shutdown open).
      expect(Date.now() - signalled).toBeLessThan(5000);
      await watch.ended;
      expect(watch.statuses).toEqual(['SERVING', 'NOT_SERVING']);
      const logs = jsonLines(p.output());
      expect(logs.some((l) => l.msg === 'drained')).toBe(true);
      // the debits landed in Valkey, and tollgate's connection is gone
      expect(Number(await vk.client.hget(`tollgate:r:tenant-requests:${tenant}`, 'v'))).toBeLessThanOrEqual(
        980 + 1,
      );
      const clients = (await vk.client.client('LIST')) as string;
      expect(clients).not.toMatch(/name=tollgate /);
    } finally {
      envoy.close();
      watch.cancel();
      health.close();
      p.kill();
    }
  });

  it('the grace period bounds the drain: calls still stuck are cancelled and the process exits 0', async () => {
    const file = join(dir, 'slow2.yaml');
    writeFileSync(file, SLOW);
    const p = await serve(file, { VALKEY_URL: vk.url, TOLLGATE_SHUTDOWN_GRACE_MS: '200' });
    const envoy = new EnvoyClient(p.grpcPort);
    try {
      await vk.client.call('CLIENT', 'PAUSE', '4000', 'ALL');
      const call = envoy.check({ headers: { 'x-tenant-id': 'stuck' }, body: chat('gpt-4o', 'hi') }).then(
        () => 'answered',
        (e) => `error ${e.code}`,
      );
      await until(
        async () => (await scrape(p.httpPort)).value('tollgate_inflight_checks') === 1,
        1400,
        'in flight',
      );
      const t0 = Date.now();
      p.proc.kill('SIGTERM');
      const exit = await p.exited;
      expect(Date.now() - t0).toBeLessThan(2500); // long before Valkey answers (4 s)
      expect(exit.code).toBe(0);
      expect(await call).toMatch(/^error (1|14)$/); // CANCELLED / UNAVAILABLE: Envoy applies its failure mode
    } finally {
      envoy.close();
      p.kill();
      await vk.client.call('CLIENT', 'UNPAUSE');
    }
  });
});
