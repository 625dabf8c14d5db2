/**
 * `store.client: iovalkey`: a served tollgate on iovalkey decides exactly like one on tollgate's own
 * RESP connection. Two apps (one per client) share one valkey-server and one limit: together they
 * admit exactly the limit, and each answers the same headers. The store-level answers of both clients
 * are also compared case by case in test/store-conformance.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { valkeyApps } from './helpers/app.js';

const { serve } = valkeyApps();
const config = (client: string) => `
store: { client: ${client} }
limits:
  - { name: tenant-requests, per: tenant, requests: 10, every: 1h }
`;
const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });

describe('store.client', () => {
  it('iovalkey and resp apps share one limit exactly', async () => {
    const a = await serve(config('iovalkey'));
    const b = await serve(config('resp'));
    expect(a.app.store.constructor.name).toBe('IovalkeyStore');
    expect(b.app.store.constructor.name).toBe('ValkeyStore');
    const call = (c: typeof a.client) =>
      c.check({ path: '/v1/chat/completions', headers: { 'x-tenant-id': 'shared' }, body });
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) => call(i % 2 ? a.client : b.client)),
    );
    expect(answers.filter((x) => x.allowed)).toHaveLength(10);
    expect(answers.every((x) => x.allowed || x.httpStatus === 429)).toBe(true);
    expect(answers.some((x) => x.headers['x-tollgate-degraded'])).toBe(false);
    const denied = await call(a.client);
    expect(denied.headers['x-ratelimit-remaining-requests']).toBe('0');
    expect(denied.json.limit).toBe('tenant-requests');
  });

  it('rejects an unknown client', async () => {
    await expect(serve(config('hiredis'))).rejects.toThrow(/store\.client: expected one of resp, iovalkey/);
  });
});
