/**
 * Issue #5, observability: /metrics after real decisions (real gRPC, real Valkey), grpc.health.v1 via
 * the health proto, /healthz and /readyz, decision logs (and what they must never contain), and the
 * HTTP authorization mode as curl would use it.
 */
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getEncoder } from '../src/tokens/encoders.js';
import { captureLogger, HealthProbe, scrape, until } from './fixtures/ops/ops.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { freePort, startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
server: { http_authz: { port: 0 } }
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00 }
    fallback: gpt-4o-mini
  gpt-4o-mini:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.15, output: 0.60 }
  "*":
    encoding: cl100k_base
    default_max_output_tokens: 50
limits:
  - name: tenant-requests
    per: tenant
    requests: 3
    every: 1h
  - name: gpt-4o-tokens
    per: tenant
    models: [gpt-4o]
    tokens: 150
    reset: daily
`;
const prompt = (content: string) => getEncoder('o200k_base').encode(content).length + 7;
const tag = (tenant: string) => createHash('sha256').update(tenant).digest('hex').slice(0, 12);

let vk: TestValkey;
let app: TestApp;
let envoy: EnvoyClient;
const info = captureLogger('info');
const run = `${process.pid}-${Date.now()}`;
const A = `tenant-a-${run}`;
const B = `tenant-b-${run}`;

beforeAll(async () => {
  vk = await startValkey();
  app = await startTestApp(CONFIG, { valkeyUrl: vk.url, logger: info.logger });
  envoy = new EnvoyClient(app.grpcPort);
});
afterAll(async () => {
  envoy?.close();
  await app?.close(200);
  await vk?.close();
});

describe('/metrics after real decisions', () => {
  let before: Awaited<ReturnType<typeof scrape>>;
  let after: Awaited<ReturnType<typeof scrape>>;
  const SECRET_PROMPT = `the launch code is ${run}-zebra`;

  beforeAll(async () => {
    before = await scrape(app.httpPort);
    const h = (t: string, id: string) => ({ 'x-tenant-id': t, 'x-request-id': id });
    // A: gpt-4o fits its 150-token quota once (prompt + 100 reserved), then is rerouted to gpt-4o-mini
    const a1 = await envoy.check({
      headers: h(A, 'req-a1'),
      body: chat('gpt-4o', 'hello', { max_tokens: 100 }),
    });
    const a2 = await envoy.check({
      headers: h(A, 'req-a2'),
      body: chat('gpt-4o', 'hello', { max_tokens: 100 }),
    });
    expect([a1.allowed, a2.allowed, a2.upstream['x-tollgate-model']]).toEqual([true, true, 'gpt-4o-mini']);
    // B: 3 requests/hour, the 4th is denied; one of them for a model the config does not name
    for (let i = 0; i < 3; i++) {
      const model = i === 2 ? `private-model-${run}` : 'gpt-4o-mini';
      const r = await envoy.check({
        headers: h(B, `req-b${i}`),
        body: chat(model, SECRET_PROMPT, { max_tokens: 10 }),
      });
      expect(r.allowed).toBe(true);
    }
    const denied = await envoy.check({ headers: h(B, 'req-b3'), body: chat('gpt-4o-mini', SECRET_PROMPT) });
    expect(denied.httpStatus).toBe(429);
    const bad = await envoy.check({ headers: h(B, 'req-bad'), body: `{"model": "gpt-4o", ${SECRET_PROMPT}` });
    expect(bad.httpStatus).toBe(400);
    after = await scrape(app.httpPort);
  });

  const delta = (name: string, labels: Record<string, string> = {}) =>
    after.value(name, labels) - before.value(name, labels);

  it('decisions by outcome, reason, limit and model', () => {
    const d = (outcome: string, reason: string, model: string, limit = '') =>
      delta('tollgate_decisions_total', { outcome, reason, model, limit });
    expect(d('allow', 'ok', 'gpt-4o')).toBe(1);
    expect(d('reroute', 'rerouted', 'gpt-4o-mini')).toBe(1);
    expect(d('allow', 'ok', 'gpt-4o-mini')).toBe(2);
    expect(d('allow', 'ok', '*')).toBe(1); // an unconfigured model never becomes a label value
    expect(d('deny', 'rate-limited', 'gpt-4o-mini', 'tenant-requests')).toBe(1);
    expect(d('bad_request', 'bad-request', '')).toBe(1);
    expect(delta('tollgate_decisions_total')).toBe(7);
  });

  it('tokens counted and reserved, dollars reserved, by model', () => {
    // gpt-4o: one admitted call, prompt "hello" + 100 reserved
    expect(delta('tollgate_tokens_total', { model: 'gpt-4o', type: 'prompt' })).toBe(prompt('hello'));
    expect(delta('tollgate_tokens_total', { model: 'gpt-4o', type: 'reserved' })).toBe(100);
    const usd = Math.ceil(prompt('hello') * 2.5 + 100 * 10) / 1e6;
    expect(delta('tollgate_reserved_dollars_total', { model: 'gpt-4o' })).toBeCloseTo(usd, 9);
    // gpt-4o-mini: the reroute (100 reserved) + B's two calls (10 each)
    expect(delta('tollgate_tokens_total', { model: 'gpt-4o-mini', type: 'reserved' })).toBe(120);
    expect(delta('tollgate_tokens_total', { model: 'gpt-4o-mini', type: 'prompt' })).toBe(
      prompt('hello') + 2 * prompt(SECRET_PROMPT),
    );
  });

  it('decision latency histogram with sub-millisecond buckets; store latency; no store errors', () => {
    expect(delta('tollgate_decision_duration_seconds_count', { outcome: 'allow' })).toBe(4);
    expect(delta('tollgate_decision_duration_seconds_count')).toBe(7);
    expect(delta('tollgate_decision_duration_seconds_sum')).toBeGreaterThan(0);
    const les = after.samples
      .filter((s) => s.name === 'tollgate_decision_duration_seconds_bucket' && s.labels.outcome === 'allow')
      .map((s) => Number(s.labels.le))
      .filter(Number.isFinite);
    expect(les.filter((le) => le < 0.001).length).toBeGreaterThanOrEqual(4);
    expect(Math.min(...les)).toBeLessThanOrEqual(0.00005);
    // 6 store calls: the bad request never reaches Valkey
    expect(delta('tollgate_store_duration_seconds_count', { result: 'ok' })).toBe(6);
    expect(delta('tollgate_store_errors_total')).toBe(0);
    expect(after.value('tollgate_breaker_state')).toBe(0);
    expect(after.value('tollgate_config_reloads_total', { result: 'failure' })).toBe(0);
    expect(after.value('tollgate_config_limits')).toBe(2);
  });

  it('default process metrics are there', () => {
    for (const name of [
      'process_cpu_user_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_heap_size_used_bytes',
    ])
      expect(after.has(name), name).toBe(true);
  });

  it('names follow Prometheus conventions and no label carries a tenant id or prompt text', () => {
    const tollgate = [...after.types].filter(([n]) => n.startsWith('tollgate_'));
    expect(tollgate.length).toBeGreaterThanOrEqual(12);
    for (const [name, type] of tollgate) {
      if (type === 'counter') expect(name).toMatch(/_total$/);
      // a histogram measures seconds, or a unitless ratio (tollgate_reserved_to_actual_ratio)
      if (type === 'histogram') expect(name).toMatch(/_(seconds|ratio)$/);
      expect(name).toMatch(/^tollgate_[a-z_]+$/);
      expect(name).not.toMatch(/_(ms|milliseconds|micros)(_|$)/);
    }
    for (const secret of [A, B, tag(A), tag(B), `private-model-${run}`, 'launch code'])
      expect(after.text.includes(secret), secret).toBe(false);
    // every label value is from a fixed set or the config
    const allowed: Record<string, Set<string>> = {
      outcome: new Set(['allow', 'reroute', 'degraded', 'queued', 'deny', 'bad_request', 'cache']),
      model: new Set(['', '*', 'gpt-4o', 'gpt-4o-mini']),
      limit: new Set(['', 'tenant-requests', 'gpt-4o-tokens']),
    };
    // tollgate_settlements_total has its own outcomes (exported at 0 from the start)
    const settleOutcomes = new Set([
      'settled',
      'estimated',
      'upstream_error',
      'kept',
      'duplicate',
      'expired',
      'unmatched',
      'failed',
    ]);
    for (const s of after.samples.filter((x) => x.name.startsWith('tollgate_')))
      for (const [k, v] of Object.entries(s.labels)) {
        const set = k === 'outcome' && s.name === 'tollgate_settlements_total' ? settleOutcomes : allowed[k];
        if (set) expect(set.has(v), `${k}=${v}`).toBe(true);
      }
    expect(after.has('tollgate_tenant_decisions_total')).toBe(false);
  });

  it('logs: one info line per denied/rerouted decision with request id, tenant hash, model, tokens, limit', () => {
    const lines = info.lines().filter((l) => l.msg === 'decision');
    const byId = Object.fromEntries(lines.map((l) => [l.request_id, l]));
    expect(byId['req-b3']).toMatchObject({
      level: 30,
      decision: 'deny',
      reason: 'rate-limited',
      status: 429,
      tenant: tag(B),
      model: 'gpt-4o-mini',
      limit: 'tenant-requests',
      prompt_tokens: prompt(SECRET_PROMPT),
    });
    expect(byId['req-a2']).toMatchObject({
      decision: 'allow',
      reason: 'rerouted',
      tenant: tag(A),
      model: 'gpt-4o',
      chosen_model: 'gpt-4o-mini',
      prompt_tokens: prompt('hello'),
      reserved_tokens: 100,
    });
    expect(byId['req-bad']).toMatchObject({ decision: 'deny', reason: 'bad-request', status: 400 });
    // plain allows are debug-only: not at info
    for (const id of ['req-a1', 'req-b0', 'req-b1', 'req-b2']) expect(byId[id], id).toBeUndefined();
  });

  it('logs never contain prompt text, raw tenant ids or API keys (even at debug)', async () => {
    const dbg = captureLogger('debug');
    const app2 = await startTestApp(CONFIG, { logger: dbg.logger });
    const e2 = new EnvoyClient(app2.grpcPort);
    try {
      const key = `sk-live-${run}-DO-NOT-LOG`;
      for (const headers of [
        { authorization: `Bearer ${key}` },
        { 'x-api-key': key },
        { 'x-tenant-id': A },
      ]) {
        for (let i = 0; i < 5; i++) await e2.check({ headers, body: chat('gpt-4o', SECRET_PROMPT) });
        await e2.check({ headers, body: `{"model":"gpt-4o","messages":[${SECRET_PROMPT}` });
        await e2.check({ headers, body: { model: 'gpt-4o', messages: SECRET_PROMPT } });
      }
      const text = dbg.text();
      expect(dbg.lines().filter((l) => l.msg === 'decision').length).toBe(21);
      for (const secret of [SECRET_PROMPT, 'launch code', key, 'DO-NOT-LOG', A])
        expect(text.includes(secret), secret).toBe(false);
      expect(info.text().includes('launch code')).toBe(false);
    } finally {
      e2.close();
      await app2.close(100);
    }
  });
});

describe('health', () => {
  it('grpc.health.v1 Check: SERVING for the server and the ext_authz service; NOT_FOUND otherwise', async () => {
    const h = new HealthProbe(app.grpcPort);
    try {
      expect(await h.check('')).toBe('SERVING');
      expect(await h.check('envoy.service.auth.v3.Authorization')).toBe('SERVING');
      await expect(h.check('no.such.Service')).rejects.toMatchObject({ code: 5 });
    } finally {
      h.close();
    }
  });

  it('/healthz and /readyz answer small JSON', async () => {
    const live = await fetch(`http://127.0.0.1:${app.httpPort}/healthz`);
    expect(live.status).toBe(200);
    expect(await live.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`http://127.0.0.1:${app.httpPort}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ready',
      draining: false,
      store: { kind: 'valkey', usable: true, breaker: 'closed' },
      config: { limits: 2 },
    });
  });

  it('on_store_failure: allow keeps SERVING through a store outage; calls are degraded, errors and breaker counted', async () => {
    const dead = `valkey://127.0.0.1:${await freePort()}`;
    const logs = captureLogger('info');
    const a = await startTestApp(`${CONFIG}\nstore: { breaker: { failures: 2, open_for: 30s } }\n`, {
      valkeyUrl: dead,
      logger: logs.logger,
    });
    const e = new EnvoyClient(a.grpcPort);
    const h = new HealthProbe(a.grpcPort);
    try {
      expect(await h.check()).toBe('SERVING');
      for (let i = 0; i < 4; i++) {
        const r = await e.check({
          headers: { 'x-tenant-id': A, 'x-request-id': `deg-${i}` },
          body: chat('gpt-4o', 'hi'),
        });
        expect(r.upstream['x-tollgate-degraded']).toBe('store-unavailable');
      }
      const m = await scrape(a.httpPort);
      expect(m.value('tollgate_decisions_total', { outcome: 'degraded', reason: 'degraded' })).toBe(4);
      expect(m.value('tollgate_store_errors_total')).toBe(2); // then the breaker is open: no more calls
      expect(m.value('tollgate_store_duration_seconds_count', { result: 'error' })).toBe(2);
      expect(m.value('tollgate_breaker_state')).toBe(2);
      expect(m.value('tollgate_breaker_transitions_total', { state: 'open' })).toBe(1);
      expect(await h.check()).toBe('SERVING');
      const deg = logs.lines().filter((l) => l.msg === 'decision' && l.reason === 'degraded');
      expect(deg.map((l) => l.request_id)).toEqual(['deg-0', 'deg-1', 'deg-2', 'deg-3']);
      expect(logs.lines().some((l) => l.msg === 'store circuit breaker open' && l.level === 50)).toBe(true);
    } finally {
      e.close();
      h.close();
      await a.close(100);
    }
  });

  it('on_store_failure: deny reports NOT_SERVING while the store is down and SERVING once it is back', async () => {
    const own = await startValkey(['--save', '']);
    const a = await startTestApp(
      `${CONFIG}\nstore: { on_store_failure: deny, breaker: { failures: 1, open_for: 300ms } }\n`,
      { valkeyUrl: own.url, logger: captureLogger('info').logger },
    );
    const e = new EnvoyClient(a.grpcPort);
    const h = new HealthProbe(a.grpcPort);
    const watch = h.watch('');
    try {
      expect(await h.check()).toBe('SERVING');
      await own.stop(true);
      const r = await e.check({ headers: { 'x-tenant-id': A }, body: chat('gpt-4o', 'hi') });
      expect(r.httpStatus).toBe(503);
      await until(async () => (await h.check()) === 'NOT_SERVING', 3000, 'NOT_SERVING');
      const ready = await fetch(`http://127.0.0.1:${a.httpPort}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toMatchObject({ status: 'not-ready', store: { usable: false } });
      await own.restart();
      await until(async () => (await h.check()) === 'SERVING', 8000, 'SERVING after the store is back');
      expect((await fetch(`http://127.0.0.1:${a.httpPort}/readyz`)).status).toBe(200);
      expect(watch.statuses).toEqual(['SERVING', 'NOT_SERVING', 'SERVING']);
    } finally {
      watch.cancel();
      e.close();
      h.close();
      await a.close(100);
      await own.close();
    }
  });
});

describe('HTTP authorization mode (what curl sees)', () => {
  // The HTTP authorization mode has its own port since issue 19 (it used to share the metrics port).
  const url = (p: string) => `http://127.0.0.1:${app.authzHttpPort}${p}`;
  const post = (p: string, body: string, headers: Record<string, string>) =>
    fetch(url(p), { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });

  it('200 with the headers to add upstream; 429 with Retry-After and an OpenAI error; 400 on bad JSON', async () => {
    const t = `http-${run}`;
    for (let i = 0; i < 3; i++) {
      const r = await post('/v1/chat/completions', JSON.stringify(chat('gpt-4o-mini', 'Hello!')), {
        'x-tenant-id': t,
      });
      expect(r.status).toBe(200);
      expect(r.headers.get('x-ratelimit-limit-requests')).toBe('3');
      expect(r.headers.get('x-ratelimit-remaining-requests')).toBe(String(2 - i));
    }
    // Envoy's http_service path_prefix "/authz" is stripped
    const r = await post('/authz/v1/chat/completions', JSON.stringify(chat('gpt-4o-mini', 'Hello!')), {
      'x-tenant-id': t,
    });
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(await r.json()).toMatchObject({
      error: { code: 'rate_limit_exceeded' },
      limit: 'tenant-requests',
    });
    const bad = await post('/v1/chat/completions', '{"model":', { 'x-tenant-id': t });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error.type).toBe('invalid_request_error');
  });

  it('a body over server.max_body_bytes (chunked, no content-length) is estimated from its full size', async () => {
    const small = await startTestApp(
      `limits:\n  - { name: tok, per: tenant, tokens: 100000, reset: daily }\nserver: { max_body_bytes: 4096, http_authz: { port: 0 } }\n`,
    );
    try {
      const body = JSON.stringify(chat('gpt-4o', 'w'.repeat(40_000), { max_tokens: 7 }));
      const res = await new Promise<{ status: number; headers: Record<string, any> }>((resolve, reject) => {
        const req = request(
          {
            port: small.authzHttpPort,
            host: '127.0.0.1',
            method: 'POST',
            path: '/v1/chat/completions',
            headers: { 'x-tenant-id': 'big' },
          },
          (r) => {
            r.resume();
            r.on('end', () => resolve({ status: r.statusCode!, headers: r.headers }));
          },
        );
        req.on('error', reject);
        for (let i = 0; i < body.length; i += 1000) req.write(body.slice(i, i + 1000)); // chunked
        req.end();
      });
      expect(res.status).toBe(200);
      expect(res.headers['x-tollgate-estimated']).toBe('true');
      // ceil(40 kB / 4 bytes per token) + the default 4096 output reserve (max_tokens sits past the
      // 4 KiB kept): the whole size counts, not the prefix
      expect(Number(res.headers['x-ratelimit-remaining-tokens'])).toBe(
        100000 - Math.ceil(body.length / 4) - 4096,
      );
    } finally {
      await small.close(100);
    }
  });
});
