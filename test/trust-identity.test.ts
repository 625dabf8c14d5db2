/**
 * Identity and secrets: hostile tenant/team ids cannot collide with other tenants' keys or escape the
 * key prefix; clients cannot spoof tollgate's own headers or pick their identity when an API key
 * decides it; raw API keys appear nowhere — logs, metrics, Valkey (keys and values), error answers.
 */
import { createHash, createHmac } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { safeId } from '../src/identity/identity.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { type CheckAnswer, chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const SAFE_PART = /^([A-Za-z0-9_.@-]{1,64}|~[A-Za-z0-9_-]{27})$/;

let vk: TestValkey;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});

describe('hostile ids', () => {
  it('safeId: always one safe key part, never containing : { } * newline NUL, and distinct ids stay distinct', () => {
    const hostile = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 100 }),
      fc.string({ unit: fc.constantFrom(':', '{', '}', '*', '\n', '\0', 'a', '~', '-', '.'), maxLength: 30 }),
      fc.string({ minLength: 60, maxLength: 70 }),
      fc.constant('x'.repeat(10_240)),
    );
    fc.assert(
      fc.property(hostile, hostile, (a, b) => {
        const [sa, sb] = [safeId(a), safeId(b)];
        expect(sa).toMatch(SAFE_PART);
        if (a !== b) expect(sa).not.toBe(sb);
      }),
      { seed: 77, numRuns: 2000 },
    );
  });

  describe('end to end through Valkey', () => {
    let app: TestApp;
    let envoy: EnvoyClient;
    beforeAll(async () => {
      app = await startTestApp(
        `
identity:
  tenant: [{ header: x-tenant-id }]
  team: [{ header: x-team-id }]
limits:
  - { name: pair, per: [tenant, team], requests: 2, every: 1h }
  - { name: solo, per: tenant, requests: 3, every: 1h }
`,
        { valkeyUrl: vk.url },
      );
      envoy = new EnvoyClient(app.grpcPort);
    });
    afterAll(async () => {
      envoy?.close();
      await app?.close(1000);
    });
    const call = (tenant: string, team = 't') =>
      envoy.check({
        headers: { 'x-tenant-id': tenant, 'x-team-id': team },
        body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }),
      });

    it('ids that would collide as raw key parts get separate budgets', async () => {
      const stamp = Date.now();
      // "a:b" + "c" and "a" + "b:c" would both be "...:a:b:c" if ids were pasted in raw
      expect((await call(`${stamp}a:b`, 'c')).allowed).toBe(true);
      expect((await call(`${stamp}a:b`, 'c')).allowed).toBe(true);
      expect((await call(`${stamp}a:b`, 'c')).allowed).toBe(false);
      expect((await call(`${stamp}a`, 'b:c')).allowed).toBe(true);
    });

    it('a victim’s exhausted budget is not shared with look-alike ids, and no key escapes the prefix', async () => {
      const victim = `victim${Date.now()}`;
      for (let i = 0; i < 3; i++) expect((await call(victim, `team${i}`)).allowed).toBe(true);
      expect((await call(victim, 'team9')).allowed).toBe(false);
      const lookalikes = [
        `${victim}:`,
        `${victim}\n`,
        `${victim}\u0000`,
        `{${victim}}`,
        `${victim}*`,
        `tollgate:r:solo:${victim}`,
        `${victim}:pair`,
        `${victim}${'x'.repeat(10_240)}`,
        `*`,
        `../${victim}`,
      ];
      for (const id of lookalikes) {
        const a = await call(id, 'teamX');
        expect(a.allowed, JSON.stringify(id.slice(0, 40))).toBe(true);
        expect(a.headers['x-ratelimit-remaining-requests']).toBe('1'); // a fresh pair budget (2 − 1)
      }
      const keys = await vk.client.keys('*');
      for (const k of keys) {
        expect(k.startsWith('tollgate:')).toBe(true);
        // reservation records: tollgate:v:<random id>, never a caller's id
        if (k.startsWith('tollgate:v:')) {
          expect(k).toMatch(/^tollgate:v:[0-9a-z]{6,11}\.[A-Za-z0-9_-]{22}$/);
          continue;
        }
        const parts = k.split(':');
        const [, kind, limit, ...ids] = parts;
        expect(['r', 'c']).toContain(kind);
        expect(['pair', 'solo']).toContain(limit);
        expect(ids.length).toBe(limit === 'pair' ? 2 : 1);
        for (const id of ids) expect(id).toMatch(SAFE_PART);
        expect(k).not.toMatch(/[{}*\n\0]/);
      }
    });
  });
});

describe('spoofing and secrets (real process, debug logs, tenant label on in metrics)', () => {
  const SECRET = 'hmac-secret-for-tests';
  const KEYS = {
    bearer: 'sk-live-BEARER-0123456789abcdef',
    xApiKey: 'sk-live-XAPIKEY-0123456789abcdef',
    apiKey: 'sk-live-AZUREKEY-0123456789abcdef',
    basic: 'sk-live-BASIC-0123456789abcdef',
  };
  let p: TollgateProc;
  let envoy: EnvoyClient;
  const answers: CheckAnswer[] = [];
  beforeAll(async () => {
    p = await spawnTollgate({
      yaml: `
identity:
  tenant: [{ api_key: true }]
models:
  gpt-4o: { fallback: gpt-4o-mini }
  gpt-4o-mini: {}
limits:
  - { name: req, per: tenant, requests: 3, every: 1h }
  - { name: big, per: tenant, models: [gpt-4o], tokens: 50, every: 1h }
`,
      env: {
        VALKEY_URL: vk.url,
        LOG_LEVEL: 'debug',
        TOLLGATE_API_KEY_SECRET: SECRET,
        TOLLGATE_METRICS_TENANT_LABEL: 'true',
      },
    });
    envoy = new EnvoyClient(p.grpcPort);
  });
  afterAll(async () => {
    envoy?.close();
    await p?.stop('SIGKILL');
  });

  it('client-sent x-tollgate-* headers are removed or overwritten, never passed on', async () => {
    const spoof = {
      authorization: `Bearer ${KEYS.bearer}`,
      'X-Tollgate-Model': 'gpt-4o',
      'x-tollgate-rerouted-from': 'x',
      'x-tollgate-degraded': 'store-unavailable',
      'x-tollgate-estimated': 'true',
      'x-tollgate-shadow': 'deny',
    };
    const a = await envoy.check({ headers: spoof, body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }) });
    answers.push(a);
    expect(a.allowed).toBe(true);
    expect(a.removed.sort()).toEqual([
      'x-tollgate-degraded',
      'x-tollgate-estimated',
      'x-tollgate-model',
      'x-tollgate-rerouted-from',
      'x-tollgate-shadow',
    ]);
    // rerouted: tollgate's own value replaces the client's (OVERWRITE_IF_EXISTS_OR_ADD)
    const r = await envoy.check({ headers: spoof, body: chat('gpt-4o', 'hi', { max_tokens: 100 }) });
    answers.push(r);
    expect(r.allowed).toBe(true);
    expect(r.upstream['x-tollgate-model']).toBe('gpt-4o-mini');
    expect(r.upstream['x-tollgate-rerouted-from']).toBe('gpt-4o');
    expect(r.removed).not.toContain('x-tollgate-model');
    expect(r.removed).toContain('x-tollgate-degraded');
  });

  it('identity comes from a keyed hash of the API key; a client cannot claim another tenant', async () => {
    const id = `key_${createHmac('sha256', SECRET).update(KEYS.xApiKey).digest('hex').slice(0, 32)}`;
    for (let i = 0; i < 4; i++)
      answers.push(
        await envoy.check({
          headers: { 'x-api-key': KEYS.xApiKey, 'x-tenant-id': `someone-else-${i}` },
          body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }),
        }),
      );
    expect(answers.slice(-4).map((a) => a.allowed)).toEqual([true, true, true, false]);
    expect(answers.at(-1)!.httpStatus).toBe(429);
    const keys = await vk.client.keys('tollgate:*');
    expect(keys).toContain(`tollgate:r:req:${id}`);
    // keyed: the plain SHA-256 of the key (which anyone holding a leaked key list could compute) is not used
    const plain = createHash('sha256').update(KEYS.xApiKey).digest('hex').slice(0, 32);
    expect(keys.some((k) => k.includes(plain))).toBe(false);
    // other key headers, and a malformed Authorization, plus error paths (400, never-fits 429)
    answers.push(await envoy.check({ headers: { 'api-key': KEYS.apiKey }, body: chat('gpt-4o-mini', 'hi') }));
    answers.push(
      await envoy.check({
        headers: { authorization: `Basic ${KEYS.basic}` },
        body: chat('gpt-4o-mini', 'hi'),
      }),
    );
    answers.push(
      await envoy.check({
        headers: { authorization: `Bearer ${KEYS.bearer}` },
        body: '{"model": "gpt-4o", "messa',
      }),
    );
    answers.push(
      await envoy.check({
        headers: { authorization: `Bearer ${KEYS.bearer}` },
        body: chat('gpt-4o-mini', 'x', { max_tokens: -1 }),
      }),
    );
    answers.push(
      await envoy.check({
        headers: { 'x-api-key': KEYS.xApiKey },
        body: chat('gpt-4o-mini', 'x', { max_tokens: 100000 }),
      }),
    );
    expect(answers.some((a) => a.httpStatus === 400)).toBe(true);
  });

  it('raw API keys appear nowhere: logs, metrics, Valkey keys and values, answers', async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${p.httpPort}/metrics`)).text();
    expect(metrics).toMatch(/tollgate_/);
    const valkeyDump: string[] = [];
    for (const k of await vk.client.keys('*')) {
      valkeyDump.push(k);
      const type = await vk.client.type(k);
      if (type === 'hash') valkeyDump.push(JSON.stringify(await vk.client.hgetall(k)));
      else if (type === 'stream') valkeyDump.push(JSON.stringify(await vk.client.xrange(k, '-', '+')));
    }
    const surfaces: Record<string, string> = {
      logs: p.output(),
      metrics,
      valkey: valkeyDump.join('\n'),
      answers: JSON.stringify(answers.map((a) => a.raw)),
    };
    expect(surfaces.logs.length).toBeGreaterThan(1000);
    for (const [surface, text] of Object.entries(surfaces))
      for (const key of Object.values(KEYS)) {
        expect(text.includes(key), `${surface} contains ${key}`).toBe(false);
        expect(text.includes(key.slice(8, 24)), `${surface} contains part of ${key}`).toBe(false);
      }
  });
});
