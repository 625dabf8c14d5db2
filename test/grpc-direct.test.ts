/**
 * server.grpc_direct_check: Check answered straight from grpc-js's HTTP/2 server (src/authz/grpc/direct.ts),
 * everything else (health, unknown methods, compressed calls) by grpc-js. The answers must be the ones
 * grpc-js gives: same message bytes, same statuses for bad input, and no crash on a client that goes
 * away. Which path answered shows in one response header: `grpc-accept-encoding` is `identity` on the
 * direct path and grpc-js's `identity,deflate,gzip` otherwise.
 */
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { loadGrpcPackages } from '../src/authz/grpc/protos.js';
import { startTestApp, type TestApp, valkeyApps } from './helpers/app.js';
import { buildCheckRequest, type CheckOptions, chat, EnvoyClient } from './helpers/envoy.js';
import { grpcFrame, type RawAnswer, rawGrpc } from './helpers/raw-grpc.js';

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

const frame = grpcFrame;

/** A Check made by hand over HTTP/2, so every header and byte of the answer can be read. */
function rawCall(
  port: number,
  body: Buffer,
  o: { path?: string; headers?: Record<string, string> } = {},
): Promise<RawAnswer> {
  return rawGrpc(port, o.path ?? CHECK, o.headers ?? {}, (s) => s.end(body));
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
    // Same decision (the first call of the tenant on each server), same bytes, except that
    // x-ratelimit-reset is a Unix time in seconds: two calls may straddle a second (same length).
    const resetAt = (buf: Buffer) => /x-ratelimit-reset[\s\S]{2}(\d{10})/.exec(buf.toString('latin1'))?.[1];
    const ra = resetAt(a.body);
    const rb = resetAt(b.body);
    expect(ra).toBeDefined();
    expect(Math.abs(Number(ra) - Number(rb))).toBeLessThanOrEqual(1);
    // and each allow has its own random reservation id (same length; in the upstream header and the
    // dynamic metadata)
    const idOf = (buf: Buffer) => /[0-9a-z]{6,11}\.[A-Za-z0-9_-]{22}/.exec(buf.toString('latin1'))?.[0];
    const [ia, ib] = [idOf(a.body), idOf(b.body)];
    expect(ia).toBeDefined();
    expect(ia!.length).toBe(ib!.length);
    expect(a.body.toString('latin1').replace(ra!, rb!).replaceAll(ia!, ib!)).toBe(b.body.toString('latin1'));
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

  it('bad input gets the status grpc-js gives it (each case sent to both paths)', async () => {
    const direct = await app();
    const viaGrpcJs = await app('  grpc_direct_check: false');
    const valid = serializeCheck({ headers: { 'x-tenant-id': 'bad-input' }, body: chat('gpt-4o-mini', 'x') });
    const large = serializeCheck({
      headers: { 'x-tenant-id': 'bad-input-large' },
      body: chat('gpt-4o-mini', 'word '.repeat(60_000)),
    });
    const limit = 2 * 4096 + 1024 * 1024; // max_body_bytes 4096: messages up to 2 × 4096 + 1 MiB are read
    const declaredHuge = Buffer.alloc(5);
    declaredHuge.writeUInt32BE(limit + 1, 1);
    const cases: [string, Buffer, number][] = [
      ['malformed protobuf', frame(Buffer.from([0xff, 0xff, 0xff])), 13],
      ['no message at all', Buffer.alloc(0), 12],
      ['a truncated message', frame(valid).subarray(0, 20), 12],
      ['two messages', Buffer.concat([frame(valid), frame(valid)]), 12],
      ['a message and 3 stray bytes', Buffer.concat([frame(valid), Buffer.alloc(3)]), 0],
      // ~300 KB: many HTTP/2 DATA frames, so the message is assembled from many chunks
      ['a large message (many chunks)', frame(large), 0],
      ['a large message, then a second one', Buffer.concat([frame(large), frame(valid)]), 12],
      ['a large message cut short', frame(large).subarray(0, 200_000), 12],
      [
        'two messages, the second one over the limit',
        Buffer.concat([frame(valid), frame(Buffer.alloc(limit + 1))]),
        8,
      ],
      ['over the receive limit', frame(Buffer.alloc(limit + 1)), 8],
      ['a length prefix over the limit, nothing after it', declaredHuge, 8],
      ['compressed flag with identity encoding (read as identity)', frame(valid, 1), 0],
    ];
    for (const [what, body, code] of cases) {
      const a = await rawCall(direct.grpcPort, body);
      const b = await rawCall(viaGrpcJs.grpcPort, body);
      expect(b.status, `grpc-js, ${what}`).toBe(code);
      expect(a.status, `direct, ${what}`).toBe(code);
    }
    const malformed = await rawCall(direct.grpcPort, frame(Buffer.from([0xff, 0xff, 0xff])));
    expect(malformed.message).toBe('Error deserializing request'); // no parser detail, as grpc-js
    // The server is fine afterwards.
    const ok = await rawCall(direct.grpcPort, frame(valid));
    expect(ok.status).toBe(0);
    expect(ok.headers['grpc-accept-encoding']).toBe('identity');
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

  it('clients that reset their calls, before or after sending them: no crash, every decision debited once', async () => {
    const a = await app();
    const session = http2.connect(`http://127.0.0.1:${a.grpcPort}`);
    const request = frame(
      serializeCheck({ headers: { 'x-tenant-id': 'gone' }, body: chat('gpt-4o-mini', 'bye') }),
    );
    const calls: Promise<void>[] = [];
    for (let i = 0; i < 30; i++) {
      const s = session.request({
        ':method': 'POST',
        ':path': CHECK,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      s.on('error', () => {});
      calls.push(new Promise<void>((resolve) => s.on('close', () => resolve())));
      if (i % 3 === 0) {
        // part of a message, then RST_STREAM(NO_ERROR) without ever ending the stream
        // (closed at once: the server sees the reset before the end, so the stream is closed when it
        // would answer; answering a closed stream throws in Node)
        s.write(request.subarray(0, 3));
        s.close(http2.constants.NGHTTP2_NO_ERROR);
      } else if (i % 3 === 1) {
        // the whole message, not ended, then RST_STREAM(NO_ERROR)
        s.write(request);
        s.close(http2.constants.NGHTTP2_NO_ERROR);
      } else {
        // the whole call, cancelled as soon as it is sent (before or after its answer)
        s.end(request, () => s.close(http2.constants.NGHTTP2_CANCEL));
      }
    }
    await Promise.all(calls);
    session.close();
    const client = new EnvoyClient(a.grpcPort);
    try {
      const next = await client.check({
        headers: { 'x-tenant-id': 'gone' },
        body: chat('gpt-4o-mini', 'again'),
      });
      expect(next.allowed).toBe(true);
      const metrics = await (await fetch(`http://127.0.0.1:${a.httpPort}/metrics`)).text();
      expect(metrics).toMatch(/^tollgate_inflight_checks 0$/m);
      // Every decision made (the reset calls that were read, plus this one) was debited exactly once.
      let decided = 0;
      for (const m of metrics.matchAll(/^tollgate_decisions_total\{[^}]*\} (\d+)$/gm))
        decided += Number(m[1]);
      expect(decided).toBeGreaterThanOrEqual(1);
      expect(decided).toBeLessThanOrEqual(31);
      expect(Number(next.headers['x-ratelimit-remaining-requests'])).toBe(100 - decided);
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
