/**
 * Plans and hierarchy: org → team → user → agent budgets checked in one atomic call, plan tiers chosen
 * by header, Envoy metadata (jwt_authn claims) or a key map, tool-call weights, token weights, and
 * calendar quotas in a customer's time zone. Real gRPC, real valkey-server.
 */

import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { tzOffsetMinutes, windowEnd } from '../src/policy/calendar.js';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';
import { officialRoot, toStruct } from './helpers/official.js';

const { vk: valkey, serve } = valkeyApps();
let seq = 0;
const uid = (p: string) => `${p}${Date.now()}x${++seq}`;

const HIERARCHY = `
identity:
  org: [{ header: x-org }]
  team: [{ header: x-team }]
  user: [{ header: x-user }]
  agent: [{ header: x-agent }]
limits:
  - { name: org-requests, per: org, requests: 8, every: 1h }
  - { name: team-requests, per: [org, team], requests: 6, every: 1h }
  - { name: user-requests, per: [org, team, user], requests: 4, every: 1h }
  - { name: agent-requests, per: [org, team, user, agent], requests: 2, every: 1h }
`;

describe('hierarchy', () => {
  it('an agent call must fit agent, user, team and org budgets at once; each level binds in turn', async () => {
    const { client } = await serve(HIERARCHY);
    const org = uid('org');
    const call = (team: string, user: string, agent: string) =>
      client.check({
        headers: { 'x-org': org, 'x-team': team, 'x-user': user, 'x-agent': agent },
        body: chat('m', 'hi'),
      });
    const binding = async (team: string, user: string, agent: string) => {
      const r = await call(team, user, agent);
      return r.allowed ? 'allowed' : r.json.limit;
    };
    // agent level binds first: 2 per agent
    expect([
      await binding('t1', 'u1', 'a1'),
      await binding('t1', 'u1', 'a1'),
      await binding('t1', 'u1', 'a1'),
    ]).toEqual(['allowed', 'allowed', 'agent-requests']);
    // user level: u1 has used 2 of 4; a second agent gets 2 more, then the user budget binds
    expect([
      await binding('t1', 'u1', 'a2'),
      await binding('t1', 'u1', 'a2'),
      await binding('t1', 'u1', 'a3'),
    ]).toEqual(['allowed', 'allowed', 'user-requests']);
    // team level: t1 has used 4 of 6; another user gets 2, then the team binds
    expect([
      await binding('t1', 'u2', 'a1'),
      await binding('t1', 'u2', 'a2'),
      await binding('t1', 'u3', 'a1'),
    ]).toEqual(['allowed', 'allowed', 'team-requests']);
    // org level: org has used 6 of 8; another team gets 2, then the org binds
    expect([
      await binding('t2', 'u1', 'a1'),
      await binding('t2', 'u2', 'a1'),
      await binding('t3', 'u1', 'a1'),
    ]).toEqual(['allowed', 'allowed', 'org-requests']);
    // all-or-nothing: the denied calls debited no level
    const used = Number(await valkey().client.hget(`tollgate:r:team-requests:${org}:t2`, 'v'));
    expect(Math.round(used)).toBe(4);
  });

  it('the deny names the level (scope), never the raw id', async () => {
    const { client } = await serve(HIERARCHY);
    const org = uid('secret-org-name');
    const h = { 'x-org': org, 'x-team': 't', 'x-user': 'u', 'x-agent': 'a' };
    await client.check({ headers: h, body: chat('m', 'x') });
    await client.check({ headers: h, body: chat('m', 'x') });
    const d = await client.check({ headers: h, body: chat('m', 'x') });
    expect(d.json.error.message).toContain('(per org,team,user,agent)');
    expect(d.body).not.toContain(org);
  });
});

const PLANS = `
identity:
  tenant: [{ header: x-tenant-id }]
  plan:
    sources:
      - header: x-plan
      - metadata: "envoy.filters.http.jwt_authn:payload.plan"
    values: [free, pro, enterprise]
    default: free
limits:
  - { name: free-requests, per: tenant, requests: 2, reset: daily, when: { plan: free } }
  - { name: pro-requests, per: tenant, requests: 5, reset: daily, when: { plan: pro } }
  - { name: enterprise-requests, per: tenant, requests: 100, reset: daily, when: { plan: enterprise } }
`;

describe('plans', () => {
  it('the plan header picks the budget; an unknown plan gets the default plan', async () => {
    const { client } = await serve(PLANS);
    const count = async (plan: string | undefined) => {
      const t = uid('tenant');
      let n = 0;
      for (let i = 0; i < 8; i++) {
        const r = await client.check({
          headers: { 'x-tenant-id': t, ...(plan ? { 'x-plan': plan } : {}) },
          body: chat('m', 'x'),
        });
        if (!r.allowed) {
          return { n, limit: r.json.limit };
        }
        n++;
      }
      return { n, limit: undefined };
    };
    expect(await count('free')).toEqual({ n: 2, limit: 'free-requests' });
    expect(await count('pro')).toEqual({ n: 5, limit: 'pro-requests' });
    expect(await count('enterprise')).toEqual({ n: 8, limit: undefined });
    expect(await count('platinum')).toEqual({ n: 2, limit: 'free-requests' }); // unknown → default plan
    expect(await count(undefined)).toEqual({ n: 2, limit: 'free-requests' });
  });

  it('the plan comes from Envoy metadata (jwt_authn claims) in a CheckRequest built with Envoy’s official protos', async () => {
    const { app } = await serve(PLANS);
    const root = officialRoot();
    const CheckRequest = root.lookupType('envoy.service.auth.v3.CheckRequest');
    const CheckResponse = root.lookupType('envoy.service.auth.v3.CheckResponse');
    const t = uid('jwt');
    const body = Buffer.from(JSON.stringify(chat('m', 'x')));
    const bytes = CheckRequest.encode(
      CheckRequest.fromObject({
        attributes: {
          request: {
            http: {
              method: 'POST',
              path: '/v1/chat/completions',
              headers: {
                'x-tenant-id': t,
                'content-type': 'application/json',
                'content-length': String(body.length),
              },
              raw_body: body,
            },
          },
          metadata_context: {
            filter_metadata: {
              'envoy.filters.http.jwt_authn': toStruct({
                payload: { sub: 'alice', plan: 'pro', iss: 'https://issuer' },
              }),
            },
          },
        },
      }),
    ).finish();
    const raw = new grpc.Client(`127.0.0.1:${app.grpcPort}`, grpc.credentials.createInsecure());
    const send = () =>
      new Promise<any>((resolve, reject) =>
        raw.makeUnaryRequest(
          '/envoy.service.auth.v3.Authorization/Check',
          (b: Buffer) => b,
          (b: Buffer) => CheckResponse.toObject(CheckResponse.decode(b), { enums: String }),
          Buffer.from(bytes),
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      );
    const results = [];
    for (let i = 0; i < 6; i++) results.push(await send());
    raw.close();
    const allowed = results.filter(
      (r) => !r.status || r.status.code === 0 || r.status.code === undefined,
    ).length;
    expect(allowed).toBe(5); // the pro budget, from the JWT claim
    expect(JSON.parse(results[5].denied_response.body).limit).toBe('pro-requests');
  });

  it('the key map assigns org/plan to API keys, and reloads with the config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keymap-'));
    const key = `sk-live-${Date.now()}`;
    const digest = createHash('sha256').update(key).digest('hex');
    const cfgFile = join(dir, 'tollgate.yaml');
    writeFileSync(
      cfgFile,
      `identity:
  key_map: keys.yaml
  tenant: [{ key_map: org }, { api_key: true }]
  plan:
    sources: [{ key_map: plan }]
    values: [free, pro]
    default: free
limits:
  - { name: free-requests, per: tenant, requests: 1, every: 1h, when: { plan: free } }
  - { name: pro-requests, per: tenant, requests: 3, every: 1h, when: { plan: pro } }
`,
    );
    const org = uid('acme');
    writeFileSync(join(dir, 'keys.yaml'), `keys:\n  ${digest}: { org: ${org}, plan: free }\n`);
    const config = loadConfig(cfgFile);
    const { app, client } = await serve('limits: []', { config, configFile: cfgFile });
    const h = { authorization: `Bearer ${key}` };
    expect((await client.check({ headers: h, body: chat('m', 'x') })).allowed).toBe(true);
    const d = await client.check({ headers: h, body: chat('m', 'x') });
    expect(d.json.limit).toBe('free-requests');
    expect(await valkey().client.exists(`tollgate:r:free-requests:${org}`)).toBe(1);
    // upgrade the key to pro in the key map and reload
    writeFileSync(join(dir, 'keys.yaml'), `keys:\n  ${digest}: { org: ${org}, plan: pro }\n`);
    expect(app.reload()).toBe(true);
    const after = [];
    for (let i = 0; i < 4; i++) after.push(await client.check({ headers: h, body: chat('m', 'x') }));
    expect(after.map((r) => r.allowed)).toEqual([true, true, true, false]);
    expect(after[3].json.limit).toBe('pro-requests');
    // a broken key map keeps the running config
    writeFileSync(join(dir, 'keys.yaml'), 'keys:\n  not-a-digest: { plan: pro }\n');
    expect(app.reload()).toBe(false);
    expect((await client.check({ headers: h, body: chat('m', 'x') })).json.limit).toBe('pro-requests');
  });
});

describe('weights', () => {
  it('tool calls count their weight against requests limits that opt in', async () => {
    const { client } = await serve(`
tool_weights: { web_search: 1, image_generation: 10, "*": 2 }
limits:
  - { name: weighted, per: tenant, requests: 20, every: 1h, count: weighted }
  - { name: plain, per: tenant, requests: 100, every: 1h }
`);
    const t = uid('w');
    const fn = (name: string) => ({
      type: 'function',
      function: { name, parameters: { type: 'object', properties: {} } },
    });
    const remaining = async (extra: Record<string, unknown>) => {
      const r = await client.check({ headers: { 'x-tenant-id': t }, body: chat('m', 'x', extra) });
      return [Number(r.headers['x-ratelimit-remaining-requests']), r.allowed];
    };
    // no tools → weight 1 (plain 99 remains the larger; the header shows the least remaining: weighted)
    expect(await remaining({})).toEqual([19, true]);
    expect(await remaining({ tools: [fn('web_search')] })).toEqual([18, true]);
    expect(await remaining({ tools: [fn('image_generation')] })).toEqual([8, true]);
    expect(await remaining({ tools: [fn('web_search'), fn('unknown_tool')] })).toEqual([5, true]); // 1 + 2
    // an invoked tool (assistant tool_calls in the history) counts too; 10 > 5 left → denied
    const d = await client.check({
      headers: { 'x-tenant-id': t },
      body: {
        model: 'm',
        messages: [
          { role: 'user', content: 'draw' },
          {
            role: 'assistant',
            tool_calls: [
              { id: 'c1', type: 'function', function: { name: 'image_generation', arguments: '{}' } },
            ],
          },
          { role: 'tool', tool_call_id: 'c1', content: 'done' },
        ],
      },
    });
    expect(d.allowed).toBe(false);
    expect(d.json.limit).toBe('weighted');
    expect(Math.round(Number(await valkey().client.hget(`tollgate:r:plain:${t}`, 'v')))).toBe(96); // unweighted: 1 per call
  });

  it('token_weight multiplies a premium model’s tokens on token limits', async () => {
    const { client } = await serve(`
models:
  premium: { encoding: o200k_base, token_weight: 2 }
  basic: { encoding: o200k_base }
limits:
  - { name: shared-tokens, per: tenant, tokens: 10000, every: 1h }
`);
    const t = uid('tw');
    const a = await client.check({
      headers: { 'x-tenant-id': t },
      body: chat('basic', 'x', { max_tokens: 992 }),
    }); // 1000 tokens
    expect(a.headers['x-ratelimit-remaining-tokens']).toBe('9000');
    const b = await client.check({
      headers: { 'x-tenant-id': t },
      body: chat('premium', 'x', { max_tokens: 992 }),
    });
    expect(b.headers['x-ratelimit-remaining-tokens']).toBe('7000');
  });
});

describe('time zones', () => {
  it('a daily quota with a timezone resets at that zone’s midnight', async () => {
    const { app, client } = await serve(`
limits:
  - { name: tokyo-daily, per: tenant, requests: 1, reset: daily, timezone: Asia/Tokyo }
  - { name: utc-daily, per: tenant, requests: 5, reset: daily }
`);
    const t = uid('tz');
    await client.check({ headers: { 'x-tenant-id': t }, body: chat('m', 'x') });
    const end = Number(await valkey().client.hget(`tollgate:c:tokyo-daily:daily@Asia_Tokyo:${t}`, 'e'));
    const now = Date.now();
    const tokyoMidnight = windowEnd(now, 2, tzOffsetMinutes('Asia/Tokyo', now));
    expect(end).toBe(tokyoMidnight);
    expect(new Date(end).getUTCHours()).toBe(15); // 00:00 JST = 15:00 UTC
    expect(Number(await valkey().client.hget(`tollgate:c:utc-daily:daily:${t}`, 'e')) % 86_400_000).toBe(0);
    const d = await client.check({ headers: { 'x-tenant-id': t }, body: chat('m', 'x') });
    expect(d.json.limit).toBe('tokyo-daily');
    expect(Number(d.headers['retry-after'])).toBe(Math.ceil((tokyoMidnight - Date.now()) / 1000));
    // past the zone's midnight the quota starts again (simulated by editing Valkey, so drop the local
    // "denied until midnight" cache entry too)
    await valkey().client.hset(`tollgate:c:tokyo-daily:daily@Asia_Tokyo:${t}`, 'e', String(Date.now() - 1));
    app.decider.denyCache.clear();
    expect((await client.check({ headers: { 'x-tenant-id': t }, body: chat('m', 'x') })).allowed).toBe(true);
  });
});
