/**
 * `tollgate usage | credit | reset`, run as the real `node dist/src/cli.js`: straight to Valkey
 * (VALKEY_URL) and through a running tollgate's admin listener (--admin + TOLLGATE_ADMIN_TOKEN).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killAll, runCli } from './fixtures/ops/ops.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const TOKEN = 'cli-admin-token-0b5e';
const CONFIG = `
models:
  "*": { price_usd_per_1m: { input: 1, output: 1 } }
limits:
  - { name: tenant-tokens, per: tenant, tokens: 1000, reset: daily }
  - { name: tenant-requests, per: tenant, requests: 10, every: 1h }
  - { name: tenant-spend, per: tenant, usd: 2, reset: monthly }
server:
  admin: { port: 0 }
`;

let dir: string;
let cfg: string;
let vk: TestValkey;
let app: TestApp;
let envoy: EnvoyClient;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-admin-cli-'));
  cfg = join(dir, 'tollgate.yaml');
  writeFileSync(cfg, CONFIG);
  vk = await startValkey();
  app = await startTestApp(CONFIG, { valkeyUrl: vk.url, adminToken: TOKEN });
  envoy = new EnvoyClient(app.grpcPort);
});
afterAll(async () => {
  killAll();
  envoy?.close();
  await app?.close(200);
  await vk?.close();
  rmSync(dir, { recursive: true, force: true });
});

const spend = (tenant: string) =>
  envoy.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o', 'hi', { max_tokens: 90 }) });

describe('tollgate usage | credit | reset against VALKEY_URL', () => {
  it('usage prints every limit with what the last Check left; --json is the API answer', async () => {
    const t = `cli-u-${Date.now()}`;
    const a = await spend(t);
    expect(a.allowed).toBe(true);
    const env = { VALKEY_URL: vk.url };
    const r = await runCli(['usage', '--config', cfg, '--scope', `tenant=${t}`], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(`^scope: tenant=${t} +model: \\(every configured model\\) +store: valkey$`, 'm'),
    );
    const left = a.headers['x-ratelimit-remaining-tokens'];
    expect(r.stdout).toMatch(
      new RegExp(`^tenant-tokens +daily \\(UTC\\) +tenant=${t} +\\d+ +1000 +${left} +tokens `, 'm'),
    );
    expect(r.stdout).toMatch(/^tenant-requests +rolling 3600s .* 1 +10 +9 +requests /m);
    const j = await runCli(['usage', '--config', cfg, '--scope', `tenant=${t}`, '--json'], env);
    const report = JSON.parse(j.stdout);
    expect(report.limits.find((l: any) => l.limit === 'tenant-tokens').remaining).toBe(Number(left));
  });

  it('credit and reset change what the next Check sees; bad input is refused', async () => {
    const t = `cli-c-${Date.now()}`;
    const left = Number((await spend(t)).headers['x-ratelimit-remaining-tokens']);
    const env = { VALKEY_URL: vk.url };
    const c = await runCli(
      ['credit', '--config', cfg, '--limit', 'tenant-tokens', '--scope', `tenant=${t}`, '--amount', '200'],
      env,
    );
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(
      new RegExp(
        `^tenant-tokens \\(tenant=${t}\\): credited 200 tokens; remaining ${left + 200} of 1000 tokens`,
      ),
    );
    const cost = 1000 - left;
    expect(Number((await spend(t)).headers['x-ratelimit-remaining-tokens'])).toBe(left + 200 - cost);
    const usd = await runCli(
      [
        'credit',
        '--config',
        cfg,
        '--limit',
        'tenant-spend',
        '--scope',
        `tenant=${t}`,
        '--amount',
        '0.5',
        '--json',
      ],
      env,
    );
    expect(JSON.parse(usd.stdout)).toMatchObject({ units: 500_000, unit: 'micro_usd' });
    const z = await runCli(
      ['reset', '--config', cfg, '--limit', 'tenant-tokens', '--scope', `tenant=${t}`],
      env,
    );
    expect(z.code).toBe(0);
    expect(z.stdout).toMatch(/reset to full; remaining 1000 of 1000 tokens/);
    expect((await spend(t)).headers['x-ratelimit-remaining-tokens']).toBe(String(1000 - cost));

    const unknown = await runCli(
      ['reset', '--config', cfg, '--limit', 'nope', '--scope', `tenant=${t}`],
      env,
    );
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/No limit named "nope"/);
    const noScope = await runCli(['reset', '--config', cfg, '--limit', 'tenant-tokens'], env);
    expect(noScope.code).toBe(1);
    expect(noScope.stderr).toMatch(/scope is missing "tenant"/);
    const noAmount = await runCli([
      'credit',
      '--config',
      cfg,
      '--limit',
      'tenant-tokens',
      '--scope',
      'tenant=x',
    ]);
    expect(noAmount.code).toBe(2);
    expect(noAmount.stderr).toMatch(/credit needs --amount/);
  });
});

describe('tollgate usage | credit | reset --admin (through the admin listener)', () => {
  it('talks to the admin API with TOLLGATE_ADMIN_TOKEN; a wrong token is exit 1 with the 401', async () => {
    const t = `cli-a-${Date.now()}`;
    const left = Number((await spend(t)).headers['x-ratelimit-remaining-tokens']);
    const admin = `http://127.0.0.1:${app.adminPort}`;
    const env = { TOLLGATE_ADMIN_TOKEN: TOKEN };
    const u = await runCli(['usage', '--admin', admin, '--scope', `tenant=${t}`, '--json'], env);
    expect(u.code).toBe(0);
    expect(JSON.parse(u.stdout).limits.find((l: any) => l.limit === 'tenant-tokens').remaining).toBe(left);
    const c = await runCli(
      ['credit', '--admin', admin, '--limit', 'tenant-tokens', '--scope', `tenant=${t}`, '--amount', '100'],
      env,
    );
    expect(c.code).toBe(0);
    expect(c.stdout).toMatch(new RegExp(`credited 100 tokens; remaining ${left + 100} of 1000`));
    expect(app.logs.some((l) => l.includes('"audit":true') && l.includes(t))).toBe(true);
    const r = await runCli(
      ['reset', '--admin', admin, '--limit', 'tenant-tokens', '--scope', `tenant=${t}`],
      env,
    );
    expect(r.stdout).toMatch(/remaining 1000 of 1000/);

    const wrong = await runCli(['usage', '--admin', admin, '--scope', `tenant=${t}`], {
      TOLLGATE_ADMIN_TOKEN: 'x',
    });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/admin API answered 401/);
    const none = await runCli(['usage', '--admin', admin, '--scope', `tenant=${t}`]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/TOLLGATE_ADMIN_TOKEN/);
  });
});
