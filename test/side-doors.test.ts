/**
 * Issue 19, item 3: the metrics port spends no budget. The metrics/probe port serves /metrics,
 * /healthz and /readyz only; the HTTP authorization mode is off unless configured, has its own port
 * and binds to 127.0.0.1 unless told otherwise; every listener's bind address is configurable; the
 * shipped configs never let a client-settable header outrank the API key.
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { type App, startApp } from '../src/app.js';
import { parseConfigText } from '../src/config/load.js';
import { createLogger } from '../src/ops/log.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat } from './helpers/envoy.js';
import { officialCheck } from './helpers/official.js';

const LIMITS = `
limits:
  - { name: tenant-requests, per: tenant, requests: 3, every: 1h }
`;
const apps: (App | TestApp)[] = [];
afterAll(async () => {
  for (const a of apps) await a.close(100);
});

const post = (port: number, path: string, headers: Record<string, string> = {}) =>
  fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(chat('gpt-4o-mini', 'hi')),
  });

/** Whether a TCP connection to host:port is accepted. 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not accept it. */
const accepts = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

describe('the metrics/probe port', () => {
  it('answers a check-shaped request with 404 and debits nothing (it used to be the HTTP authorization mode)', async () => {
    const app = await startTestApp(LIMITS);
    apps.push(app);
    expect(app.authzHttpPort).toBeUndefined(); // off unless configured
    for (const path of ['/v1/chat/completions', '/authz/v1/chat/completions', '/', '/metrics/x']) {
      const r = await post(app.httpPort, path, { 'x-tenant-id': 'victim' });
      expect(r.status, path).toBe(404);
      expect((await r.json()).error.code).toBe('not_found');
    }
    expect((await fetch(`http://127.0.0.1:${app.httpPort}/metrics`, { method: 'POST' })).status).toBe(405);
    // the victim's budget is whole: its first real check (gRPC, Envoy's official protos) sees 3 → 2
    const a = await officialCheck(app.grpcPort, {
      headers: { 'x-tenant-id': 'victim' },
      body: chat('gpt-4o-mini', 'hi'),
    });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-ratelimit-remaining-requests']).toBe('2');
    // and the probes still answer
    expect((await fetch(`http://127.0.0.1:${app.httpPort}/healthz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${app.httpPort}/readyz`)).status).toBe(200);
    expect(await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text()).toContain(
      'tollgate_decisions_total',
    );
  });
});

describe('the HTTP authorization mode', () => {
  it('has its own port, on 127.0.0.1 unless told otherwise; it decides, the metrics port does not', async () => {
    const app = await startTestApp(`${LIMITS}server: { http_authz: { port: 0 } }\n`);
    apps.push(app);
    const port = app.authzHttpPort!;
    expect(port).toBeGreaterThan(0);
    expect(port).not.toBe(app.httpPort);
    const r = await post(port, '/v1/chat/completions', { 'x-tenant-id': 'http-mode' });
    expect(r.status).toBe(200);
    expect(r.headers.get('x-ratelimit-remaining-requests')).toBe('2');
    expect(await accepts('127.0.0.1', port)).toBe(true);
    expect(await accepts('127.0.0.2', port)).toBe(false); // loopback-bound: 127.0.0.1 only
    expect(await accepts('127.0.0.2', app.httpPort)).toBe(true); // the metrics port: every interface
  });

  it('a configuration that puts it on the metrics or gRPC port is refused', () => {
    expect(() => parseConfigText('server: { http_port: 8181, http_authz: { port: 8181 } }')).toThrow(
      /server\.http_authz\.port: expected a port of its own/,
    );
    expect(() => parseConfigText('server: { http_authz: { host: 127.0.0.1 } }')).toThrow(
      /server\.http_authz\.port/,
    );
  });
});

describe('bind addresses of every listener', () => {
  it('server.grpc_host, server.http_host and server.http_authz.host are honoured', async () => {
    const config = parseConfigText(
      `${LIMITS}server:\n  grpc_host: 127.0.0.1\n  grpc_port: 0\n  http_host: 127.0.0.1\n  http_port: 0\n  http_authz: { host: 127.0.0.2, port: 0 }\n`,
    );
    const app = await startApp({ config, tokenWorkers: 0, logger: createLogger('error'), tls: false });
    apps.push(app);
    expect(await accepts('127.0.0.1', app.grpcPort)).toBe(true);
    expect(await accepts('127.0.0.2', app.grpcPort)).toBe(false);
    expect(await accepts('127.0.0.1', app.httpPort)).toBe(true);
    expect(await accepts('127.0.0.2', app.httpPort)).toBe(false);
    expect(await accepts('127.0.0.2', app.authzHttpPort!)).toBe(true);
    expect(await accepts('127.0.0.1', app.authzHttpPort!)).toBe(false);
  });
});

describe('shipped configs: a client-settable header never outranks the API key', () => {
  for (const file of ['tollgate.yaml', 'deploy/kubernetes/base/tollgate.yaml']) {
    it(`${file}: a call with an API key and x-tenant-id: victim is charged to the key, not to the victim`, async () => {
      const text = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8');
      const app = await startTestApp(text);
      apps.push(app);
      const spend = await officialCheck(app.grpcPort, {
        headers: { authorization: 'Bearer sk-attacker-1', 'x-tenant-id': 'victim' },
        body: chat('gpt-4o-mini', 'hi'),
      });
      expect(spend.allowed).toBe(true);
      expect(spend.headers['x-ratelimit-remaining-requests']).toBe('59');
      // the victim's own first call still sees a whole budget: 60 → 59
      const victim = await officialCheck(app.grpcPort, {
        headers: { 'x-tenant-id': 'victim' },
        body: chat('gpt-4o-mini', 'hi'),
      });
      expect(victim.headers['x-ratelimit-remaining-requests']).toBe('59');
    });
  }
});
