/**
 * Envoy dynamic metadata (decision/metadata.ts) on real Checks, through both gRPC paths (the direct
 * HTTP/2 one and grpc-js): every answer, allow and deny, carries the decision, the identity as tollgate
 * keys it (API keys as their hash id), the models, tokens, cost, the binding limit and the reservation.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load as loadYaml } from 'js-yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../src/identity/identity.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';

const CONFIG = (direct: boolean) => `
identity:
  tenant: [{ header: x-tenant-id }]
  user: [{ api_key: true }]
models:
  big: { price_usd_per_1m: { input: 10, output: 30 }, fallback: small }
  small: { price_usd_per_1m: { input: 1, output: 2 } }
limits:
  - { name: big-requests, per: tenant, models: [big], requests: 1, every: 1h }
  - { name: tenant-requests, per: tenant, requests: 3, every: 1h }
server:
  grpc_direct_check: ${direct}
`;

const apps: { app: TestApp; client: EnvoyClient }[] = [];
afterAll(async () => {
  for (const { app, client } of apps) {
    client.close();
    await app.close(200);
  }
});

/** The dynamic_metadata Struct as plain values. */
const meta = (raw: any): Record<string, string | number> =>
  Object.fromEntries(
    Object.entries(raw.dynamic_metadata?.fields ?? {}).map(([k, v]: [string, any]) => [
      k,
      v.stringValue ?? v.numberValue,
    ]),
  );

describe.each([true, false])('dynamic metadata (grpc_direct_check: %s)', (direct) => {
  it('allow, reroute and deny each say what happened, to whom, at what cost', async () => {
    const app = await startTestApp(CONFIG(direct));
    const client = new EnvoyClient(app.grpcPort);
    apps.push({ app, client });
    const headers = { 'x-tenant-id': 'acme', authorization: 'Bearer sk-test-123' };
    const body = chat('big', 'hello', { max_tokens: 10 });
    const first = await client.check({ headers, body });
    expect(first.allowed).toBe(true);
    const m = meta(first.raw);
    expect(m).toMatchObject({
      decision: 'allow',
      reason: 'ok',
      tenant: 'acme',
      user: hashApiKey('sk-test-123', ''),
      model: 'big',
      routed_model: 'big',
      reserved_tokens: 10,
    });
    expect(m.prompt_tokens).toBeGreaterThan(0);
    expect(m.cost_micros).toBeGreaterThan(0);
    expect(m.tollgate_reservation).toBe(first.upstream['x-tollgate-reservation']);
    expect(JSON.stringify(first.raw)).not.toContain('sk-test-123');

    const second = await client.check({ headers, body });
    expect(meta(second.raw)).toMatchObject({ decision: 'reroute', model: 'big', routed_model: 'small' });
    await client.check({ headers, body: chat('small', 'x', { max_tokens: 1 }) });
    const denied = await client.check({ headers, body });
    expect(denied.allowed).toBe(false);
    expect(meta(denied.raw)).toMatchObject({
      decision: 'deny',
      reason: 'rate-limited',
      tenant: 'acme',
      model: 'big',
      limit: 'tenant-requests',
    });
    expect(meta(denied.raw).tollgate_reservation).toBeUndefined();

    const notLlm = await client.check({ path: '/healthz', method: 'GET', headers: {} });
    expect(meta(notLlm.raw)).toEqual({ decision: 'allow', reason: 'not-llm' });
  });
});

describe("envoy.yaml's access log", () => {
  it('records the decision, identity, models, tokens, cost, limit and reservation from ext_authz metadata', () => {
    const REPO = join(import.meta.dirname, '..');
    for (const file of ['envoy.yaml', 'deploy/kubernetes/base/envoy.yaml']) {
      const text = readFileSync(join(REPO, file), 'utf8');
      const envoy = loadYaml(text) as any;
      const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
      const format = hcm.access_log[0].typed_config.log_format.json_format as Record<string, string>;
      const fields = Object.values(format)
        .map((v) => /^%DYNAMIC_METADATA\(([^:]+):([^)]+)\)%$/.exec(v))
        .filter((m) => m !== null);
      expect(new Set(fields.map((m) => m![1])), file).toEqual(new Set(['envoy.filters.http.ext_authz']));
      expect(fields.map((m) => m![2]).sort(), file).toEqual(
        [
          'decision',
          'reason',
          'tenant',
          'model',
          'routed_model',
          'prompt_tokens',
          'reserved_tokens',
          'cost_micros',
          'limit',
          'tollgate_reservation',
        ].sort(),
      );
    }
  });
});
