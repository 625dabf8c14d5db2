/**
 * Issue 19 items 8 and 9: "can never fit" (429 + x-should-retry: false) means the call exceeds a limit
 * itself, never merely this replica's share of it in degraded local mode; and such a call is never
 * queued (its consumer could never run it). Real gRPC; memory and a real valkey-server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});

async function withApp<T>(
  yaml: string,
  valkey: boolean,
  fn: (app: TestApp, c: EnvoyClient) => Promise<T>,
): Promise<T> {
  const app = await startTestApp(yaml, valkey ? { valkeyUrl: vk.url } : {});
  const c = new EnvoyClient(app.grpcPort);
  try {
    return await fn(app, c);
  } finally {
    c.close();
    await app.close(500);
  }
}
let n = 0;
const uid = (p: string) => `${p}-${Date.now()}-${++n}`;

describe('degraded local mode (Valkey down, replicas: 4)', () => {
  const CONFIG = `
server:
  decision_deadline: 60ms
store:
  timeout: 25ms
  breaker: { failures: 3, open_for: 30s }
  on_store_failure: local
  replicas: 4
limits:
  - { name: tokens, per: tenant, tokens: 1000, every: 1m }
`;
  it('a call over the local share but within the limit is a retryable 429, not "never"', async () => {
    await withApp(CONFIG, true, async (_app, c) => {
      await vk.stop(true);
      try {
        const t = uid('share');
        // 400 tokens: more than 1000 / 4 = 250, less than 1000
        const over = await c.check({
          headers: { 'x-tenant-id': t },
          body: chat('m', 'x', { max_tokens: 392 }),
        });
        expect(over.allowed).toBe(false);
        expect(over.httpStatus).toBe(429);
        expect(over.headers['x-should-retry']).toBeUndefined();
        expect(Number(over.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        expect(over.json.retry_after_seconds).toBeGreaterThanOrEqual(1);
        expect(over.headers['x-tollgate-degraded']).toBe('store-unavailable;local');
        // within the share: allowed locally
        const small = await c.check({
          headers: { 'x-tenant-id': t },
          body: chat('m', 'x', { max_tokens: 92 }),
        });
        expect(small.allowed).toBe(true);
        // over the whole limit: that one can never fit
        const never = await c.check({
          headers: { 'x-tenant-id': t },
          body: chat('m', 'x', { max_tokens: 1200 }),
        });
        expect(never.httpStatus).toBe(429);
        expect(never.headers['x-should-retry']).toBe('false');
      } finally {
        await vk.restart();
      }
    });
  });
});

describe.each([
  ['memory', false],
  ['valkey', true],
])('a call that can never fit is not queued (%s)', (_name, valkey) => {
  const QUEUE = `
queues:
  overflow: { max_length: 100 }
models:
  big: { fallback: small }
  small: {}
limits:
  - { name: big-tokens, per: tenant, models: [big], tokens: 100, every: 1h, when_exhausted: queue }
  - { name: calls, per: tenant, requests: 1, every: 1h, when_exhausted: queue }
`;
  it('its fallback fits: served by the fallback (unchanged)', async () => {
    await withApp(QUEUE, valkey, async (_app, c) => {
      const d = await c.check({ headers: { 'x-tenant-id': uid('q1') }, body: chat('small', 'x') });
      expect(d.allowed).toBe(true);
      const never = await c.check({
        headers: { 'x-tenant-id': uid('q1') },
        body: { ...chat('big', 'x', { max_tokens: 500 }) },
      });
      // "big" never fits big-tokens, and no fallback can be tried for... (the fallback "small" fits)
      expect(never.allowed).toBe(true);
      expect(never.upstream['x-tollgate-model']).toBe('small');
    });
  });

  it('its fallback exhausted for now: not queued (429 with Retry-After), never 202', async () => {
    await withApp(QUEUE, valkey, async (_app, c) => {
      const h = { 'x-tenant-id': uid('q2') };
      expect((await c.check({ headers: h, body: chat('small', 'x') })).allowed).toBe(true);
      const d = await c.check({ headers: h, body: chat('big', 'x', { max_tokens: 500 }) });
      expect(d.httpStatus).toBe(429);
      expect(d.json.status).toBeUndefined();
      if (valkey) expect(await vk.client.xlen('tollgate:q:overflow')).toBe(0);
    });
  });

  it('no candidate can ever fit: 429 + x-should-retry: false, not queued', async () => {
    await withApp(
      QUEUE.replace('models:\n  big: { fallback: small }', 'models:\n  big: {}'),
      valkey,
      async (_a, c) => {
        const h = { 'x-tenant-id': uid('q3') };
        expect((await c.check({ headers: h, body: chat('small', 'x') })).allowed).toBe(true);
        const d = await c.check({ headers: h, body: chat('big', 'x', { max_tokens: 500 }) });
        expect(d.httpStatus).toBe(429);
        expect(d.headers['x-should-retry']).toBe('false');
      },
    );
  });
});
