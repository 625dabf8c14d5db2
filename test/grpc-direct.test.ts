/**
 * server.grpc_direct_check: Check answered straight from grpc-js's HTTP/2 server (src/grpc/direct.ts),
 * everything else (health, unknown methods, compressed calls) by grpc-js. The answers must be the ones
 * grpc-js gives: same message bytes, same statuses for bad input, and no crash on a client that goes
 * away. Which path answered shows in one response header: `grpc-accept-encoding` is `identity` on the
 * direct path and grpc-js's `identity,deflate,gzip` otherwise.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { loadGrpcPackages } from '../src/grpc/protos.js';
import { startTestApp, type TestApp, valkeyApps } from './helpers/app.js';
import { buildCheckRequest, type CheckOptions, chat, EnvoyClient } from './helpers/envoy.js';

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
const CONFIG = (server = '') => `
server:
  max_body_bytes: 4096
${server}
limits:
  - { name: per-tenant, per: tenant, requests: 100, every: 1h }
`;

const { AuthorizationClient, HealthClient } = loadGrpcPackages();
const serializeCheck = (o: CheckOptions): Buffer =>
  AuthorizationClient.service.Check.requestSerialize(buildCheckRequest(o));

/** One gRPC message frame: flag, big-endian length, bytes. */
function frame(message: Buffer, compressed = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

interface RawAnswer {
  headers: http2.IncomingHttpHeaders;
  trailers?: http2.IncomingHttpHeaders;
  body: Buffer;
  /** grpc-status from the trailers, or from the headers of a trailers-only answer. */
  status: number;
  message?: string;
}

/** A gRPC call made by hand over HTTP/2, so every header and byte of the answer can be read. */
function rawCall(
  port: number,
  body: Buffer,
  o: { path?: string; headers?: Record<string, string> } = {},
): Promise<RawAnswer> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  return new Promise<RawAnswer>((resolve, reject) => {
    session.on('error', reject);
    const s = session.request({
      ':method': 'POST',
      ':path': o.path ?? CHECK,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...o.headers,
    });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    s.on('response', (h) => {
      headers = h;
    });
    s.on('trailers', (t) => {
      trailers = t;
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      const last = trailers ?? headers;
      resolve({
        headers,
        trailers,
        body: Buffer.concat(chunks),
        status: Number(last['grpc-status']),
        message: last['grpc-message'] as string | undefined,
      });
    });
    s.end(body);
  }).finally(() => session.close());
}

const apps: TestApp[] = [];
async function app(server = ''): Promise<TestApp> {
  const a = await startTestApp(CONFIG(server));
  apps.push(a);
  return a;
}
afterAll(async () => {
  for (const a of apps) await a.close(500);
});

describe('Check over HTTP/2 directly', () => {
  it('answers like grpc-js: the same CheckResponse bytes, trailers grpc-status 0', async () => {
    const direct = await app();
    const viaGrpcJs = await app('  grpc_direct_check: false');
    const request = frame(
      serializeCheck({ headers: { 'x-tenant-id': 'same' }, body: chat('gpt-4o-mini', 'hello') }),
    );
    const a = await rawCall(direct.grpcPort, request);
    const b = await rawCall(viaGrpcJs.grpcPort, request);
    expect(a.headers[':status']).toBe(200);
    expect(a.headers['content-type']).toBe('application/grpc+proto');
    expect(a.headers['grpc-accept-encoding']).toBe('identity'); // served directly
    expect(b.headers['grpc-accept-encoding']).toBe('identity,deflate,gzip'); // served by grpc-js
    expect(a.status).toBe(0);
    expect(b.status).toBe(0);
    expect(a.body.length).toBeGreaterThan(5);
    expect(a.body.readUInt32BE(1)).toBe(a.body.length - 5);
    // Same decision, same bytes (the first call of the tenant on each server; no clock in the answer
    // at this resolution except reset seconds, which both computed within the same second or two).
    const decode = (buf: Buffer) => AuthorizationClient.service.Check.responseDeserialize(buf.subarray(5));
    const da = decode(a.body);
    const db = decode(b.body);
    expect(da.status?.code ?? 0).toBe(0);
    const headers = (d: any) =>
      Object.fromEntries(
        d.ok_response.response_headers_to_add
          .map((h: any) => [h.header.key, h.header.value])
          .filter(([k]: [string]) => !k.includes('reset')),
      );
    expect(headers(da)).toEqual(headers(db));
    expect(headers(da)['x-ratelimit-remaining-requests']).toBe('99');
  });

  it('a grpc-js client (deadline, so grpc-timeout) gets allows and 429s through the direct path', async () => {
    const a = await app();
    const client = new EnvoyClient(a.grpcPort);
    try {
      const answers = [];
      for (let i = 0; i < 101; i++)
        answers.push(
          await client.check({ headers: { 'x-tenant-id': 't101' }, body: chat('gpt-4o-mini', 'hi') }),
        );
      expect(answers.slice(0, 100).every((x) => x.allowed)).toBe(true);
      expect(answers[100].allowed).toBe(false);
      expect(answers[100].httpStatus).toBe(429);
    } finally {
      client.close();
    }
  });

  it('bad input gets grpc-js statuses: malformed 13, compressed flag without encoding 13, no message 13, too large 8', async () => {
    const a = await app();
    const malformed = await rawCall(a.grpcPort, frame(Buffer.from([0xff, 0xff, 0xff])));
    expect(malformed.status).toBe(13);
    expect(malformed.message).toMatch(/^Error deserializing request/);
    const flagged = await rawCall(a.grpcPort, frame(Buffer.alloc(0), 1));
    expect(flagged.status).toBe(13);
    expect(flagged.message).toMatch(/compressed/);
    const none = await rawCall(a.grpcPort, Buffer.alloc(0));
    expect(none.status).toBe(13);
    const truncated = await rawCall(a.grpcPort, frame(Buffer.alloc(10)).subarray(0, 9));
    expect(truncated.status).toBe(13);
    // max_body_bytes 4096: messages up to 2 × 4096 + 1 MiB are read (bigger bodies are estimated).
    const huge = await rawCall(a.grpcPort, frame(Buffer.alloc(2 * 4096 + 1024 * 1024 + 1)));
    expect(huge.status).toBe(8);
    expect(huge.message).toMatch(/larger than max/);
    // The server is fine afterwards.
    const ok = await rawCall(
      a.grpcPort,
      frame(serializeCheck({ headers: { 'x-tenant-id': 'after' }, body: chat('gpt-4o-mini', 'x') })),
    );
    expect(ok.status).toBe(0);
  });

  it('hands everything else to grpc-js: gzip-compressed calls, health, unknown methods', async () => {
    const a = await app();
    const gz = new AuthorizationClient(`127.0.0.1:${a.grpcPort}`, grpc.credentials.createInsecure(), {
      'grpc.default_compression_algorithm': 2, // gzip
    });
    const health = new HealthClient(`127.0.0.1:${a.grpcPort}`, grpc.credentials.createInsecure());
    try {
      const res: any = await new Promise((resolve, reject) =>
        gz.Check(
          buildCheckRequest({ headers: { 'x-tenant-id': 'gz' }, body: chat('gpt-4o-mini', 'compressed') }),
          (err: Error | null, r: any) => (err ? reject(err) : resolve(r)),
        ),
      );
      expect(res.status?.code ?? 0).toBe(0);
      const remaining = res.ok_response.response_headers_to_add.find(
        (h: any) => h.header.key === 'x-ratelimit-remaining-requests',
      );
      expect(remaining.header.value).toBe('99');
      const st: any = await new Promise((resolve, reject) =>
        health.Check({ service: '' }, (err: Error | null, r: any) => (err ? reject(err) : resolve(r))),
      );
      expect(st.status).toBe('SERVING');
    } finally {
      gz.close();
      health.close();
    }
    const unknown = await rawCall(a.grpcPort, frame(Buffer.alloc(0)), {
      path: '/envoy.service.auth.v3.Authorization/Nope',
    });
    expect(unknown.status).toBe(12); // UNIMPLEMENTED, from grpc-js
  });

  it('a client that resets its calls mid-decision: no crash, every call still counted and finished', async () => {
    const a = await app();
    const session = http2.connect(`http://127.0.0.1:${a.grpcPort}`);
    const request = frame(
      serializeCheck({ headers: { 'x-tenant-id': 'gone' }, body: chat('gpt-4o-mini', 'bye') }),
    );
    await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<void>((resolve) => {
            const s = session.request({
              ':method': 'POST',
              ':path': CHECK,
              'content-type': 'application/grpc',
              te: 'trailers',
            });
            s.on('error', () => {});
            s.on('close', () => resolve());
            s.end(request, () => s.close(http2.constants.NGHTTP2_CANCEL));
          }),
      ),
    );
    session.close();
    const client = new EnvoyClient(a.grpcPort);
    try {
      const next = await client.check({
        headers: { 'x-tenant-id': 'gone' },
        body: chat('gpt-4o-mini', 'again'),
      });
      expect(next.allowed).toBe(true);
      // The reset calls were decided (and debited) or never read: at most 20 went before this one.
      const remaining = Number(next.headers['x-ratelimit-remaining-requests']);
      expect(remaining).toBeGreaterThanOrEqual(99 - 20);
      expect(remaining).toBeLessThanOrEqual(99);
      const metrics = await (await fetch(`http://127.0.0.1:${a.httpPort}/metrics`)).text();
      expect(metrics).toMatch(/^tollgate_inflight_checks 0$/m);
    } finally {
      client.close();
    }
  });
});

describe('Check over HTTP/2 directly, with Valkey', () => {
  const { serve } = valkeyApps();
  it('80 checks at once on one connection: all answered, each debited once', async () => {
    const { client } = await serve(CONFIG());
    const answers = await Promise.all(
      Array.from({ length: 80 }, () =>
        client.check({ headers: { 'x-tenant-id': 'burst' }, body: chat('gpt-4o-mini', 'hello') }),
      ),
    );
    expect(answers.every((x) => x.allowed && x.upstream['x-tollgate-degraded'] === undefined)).toBe(true);
    expect(
      answers.map((x) => Number(x.headers['x-ratelimit-remaining-requests'])).sort((p, q) => q - p),
    ).toEqual(Array.from({ length: 80 }, (_, i) => 99 - i));
  });
});
