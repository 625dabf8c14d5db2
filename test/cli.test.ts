/**
 * Issue #5, the CLI in package.json "bin": `tollgate validate`, `tollgate check` (dry run against the
 * in-memory store or VALKEY_URL) and usage errors, run as the real `node dist/src/cli.js`.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, killAll, REPO, runCli } from './fixtures/ops/ops.js';
import { startTestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { freePort, startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
limits:
  - name: tenant-requests
    per: tenant
    requests: 2
    every: 1h
  - name: tenant-tokens
    per: tenant
    tokens: 1000
    every: 1h
`;

let dir: string;
let cfg: string;
let body: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tollgate-cli-'));
  cfg = join(dir, 'tollgate.yaml');
  writeFileSync(cfg, CONFIG);
  body = join(dir, 'request.json');
  writeFileSync(body, JSON.stringify(chat('gpt-4o', 'Hello!', { max_tokens: 50 })));
});
afterAll(() => {
  killAll();
  rmSync(dir, { recursive: true, force: true });
});

it('package.json "bin" points tollgate at the built CLI, which has a node shebang', () => {
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
  expect(join(REPO, pkg.bin.tollgate)).toBe(CLI);
  expect(readFileSync(CLI, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
});

describe('tollgate validate', () => {
  it('exit 0 for the shipped tollgate.yaml', async () => {
    const r = await runCli(['validate', join(REPO, 'tollgate.yaml')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/tollgate\.yaml: valid \(\d+ models, 4 limits\)/);
  });

  it('exit 1 with every problem named by path and expectation', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'limits:\n  - name: x\n    tokens: -5\n    every: 1q\n    burst: 3\n');
    const r = await runCli(['validate', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`invalid configuration in ${bad}:`);
    expect(r.stderr).toMatch(/limits\[0\]\.tokens: expected an integer .* got -5/);
    expect(r.stderr).toMatch(/limits\[0\]\.every: expected a duration .* got "1q"/);
    expect(r.stderr).toMatch(/limits\[0\]\.burst/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('exit 1 for a missing file or broken YAML; exit 2 for usage errors', async () => {
    const missing = await runCli(['validate', join(dir, 'nope.yaml')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read file: ENOENT/);
    const yaml = join(dir, 'broken.yaml');
    writeFileSync(yaml, 'limits: [\n');
    const broken = await runCli(['validate', yaml]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/YAML syntax/);
    for (const args of [
      ['validate'],
      ['frobnicate'],
      ['check', '--config', cfg],
      ['check', '--bogus', 'x'],
    ]) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/usage:/);
    }
  });
});

describe('tollgate check', () => {
  it('allow: exit 0, prints the decision and the headers it would send (in-memory store)', async () => {
    const r = await runCli(['check', '--config', cfg, '--body', body, '--header', 'x-tenant-id=acme']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^decision: ALLOW \(ok\)$/m);
    expect(r.stdout).toMatch(/^model: gpt-4o$/m);
    expect(r.stdout).toMatch(/^tokens: prompt \d+, reserved output 50$/m);
    expect(r.stdout).toMatch(/^store: memory \(dry run: nothing debited\)$/m);
    expect(r.stdout).toMatch(/^ {2}x-ratelimit-remaining-requests: 1$/m);
    expect(r.stdout).toMatch(/^ {2}x-ratelimit-limit-tokens: 1000$/m);
    expect(r.stdout).not.toContain('acme'); // tenant shown as its hash only
  });

  it('deny: exit 3 with status, headers and body; --json gives the CheckResponse', async () => {
    const big = join(dir, 'big.json');
    writeFileSync(big, JSON.stringify(chat('gpt-4o', 'Hello!', { max_tokens: 5000 })));
    const r = await runCli(['check', '--config', cfg, '--body', big]);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^decision: DENY \(never-fits\) HTTP 429$/m);
    expect(r.stdout).toMatch(/^limit: tenant-tokens$/m);
    expect(r.stdout).toMatch(/^ {2}x-should-retry: false$/m);
    expect(r.stdout).toMatch(/"code":"rate_limit_exceeded"/);
    const j = await runCli(['check', '--config', cfg, '--body', big, '--json']);
    expect(j.code).toBe(3);
    const out = JSON.parse(j.stdout);
    expect(out.decision).toMatchObject({ kind: 'deny', reason: 'never-fits', httpStatus: 429 });
    expect(out.check_response.status.code).toBe(8);
    const notJson = join(dir, 'not.json');
    writeFileSync(notJson, '{"model":');
    const bad = await runCli(['check', '--config', cfg, '--body', notJson]);
    expect(bad.code).toBe(3);
    expect(bad.stdout).toMatch(/^decision: DENY \(bad-request\) HTTP 400$/m);
  });

  describe('against VALKEY_URL', () => {
    let vk: TestValkey;
    beforeAll(async () => {
      vk = await startValkey();
    });
    afterAll(async () => {
      await vk?.close();
    });

    it('decides on the live state in Valkey and debits nothing', async () => {
      const t = `cli-${Date.now()}`;
      // the server spends the tenant's 2 requests
      const app = await startTestApp(CONFIG, { valkeyUrl: vk.url });
      const envoy = new EnvoyClient(app.grpcPort);
      for (let i = 0; i < 2; i++) {
        const a = await envoy.check({
          headers: { 'x-tenant-id': t },
          body: chat('gpt-4o', 'hi', { max_tokens: 50 }),
        });
        expect(a.allowed, JSON.stringify(a.json)).toBe(true);
      }
      envoy.close();
      await app.close(100);
      const key = `tollgate:r:tenant-tokens:${t}`;
      const before = await vk.client.hgetall(key);

      const spent = await runCli(['check', '--config', cfg, '--body', body, '--header', `x-tenant-id=${t}`], {
        VALKEY_URL: vk.url,
      });
      expect(spent.code).toBe(3);
      expect(spent.stdout).toMatch(/^decision: DENY \(rate-limited\) HTTP 429$/m);
      expect(spent.stdout).toMatch(/^limit: tenant-requests$/m);
      expect(spent.stdout).toMatch(/^store: valkey/m);
      expect(await vk.client.hgetall(key)).toEqual(before);

      const fresh = `${t}-fresh`;
      for (let i = 0; i < 3; i++) {
        const r = await runCli(
          ['check', '--config', cfg, '--body', body, '--header', `x-tenant-id: ${fresh}`],
          {
            VALKEY_URL: vk.url,
          },
        );
        expect(r.code).toBe(0);
        expect(r.stdout).toMatch(/^ {2}x-ratelimit-remaining-requests: 1$/m); // the same each time: dry run
      }
      expect(await vk.client.keys(`tollgate:*${fresh}*`)).toEqual([]);
    });

    it('an unreachable Valkey is exit 1 with a readable message that hides the password', async () => {
      const url = `valkey://tollgate:s3cret-pw@127.0.0.1:${await freePort()}`;
      const r = await runCli(['check', '--config', cfg, '--body', body], { VALKEY_URL: url });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/cannot reach Valkey at valkey:\/\/tollgate:\*\*\*@127\.0\.0\.1:\d+/);
      expect(r.stderr + r.stdout).not.toContain('s3cret-pw');
    });
  });
});

describe('tollgate serve', () => {
  it('exits 1 at once, naming the port, when its gRPC port is taken (never a half-started sidecar)', async () => {
    const vk = await startValkey(); // an open store connection must not keep the process alive
    const { createServer } = await import('node:net');
    const { spawn } = await import('node:child_process');
    const blocker = createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '0.0.0.0', r));
    try {
      const env = {
        ...process.env,
        TOLLGATE_GRPC_PORT: String(port),
        TOLLGATE_HTTP_PORT: String(await freePort()),
      };
      env.VALKEY_URL = vk.url;
      delete env.TOLLGATE_HTTP_AUTHZ_PORT;
      const t0 = Date.now();
      const child = spawn(process.execPath, [CLI, 'serve'], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
        cwd: REPO,
      });
      let err = '';
      child.stderr!.on('data', (c) => {
        err += String(c);
      });
      const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      expect(code).toBe(1);
      expect(err).toMatch(/EADDRINUSE/);
      expect(Date.now() - t0).toBeLessThan(15_000);
    } finally {
      blocker.close();
      await vk.close();
    }
  });
});
