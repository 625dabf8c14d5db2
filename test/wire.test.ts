/**
 * The lean codec (src/authz/grpc/wire.ts) must give exactly what the proto-loader path gives: for generated
 * CheckRequests (every field tollgate reads, plus fields it skips), decodeCheckInput(bytes) equals
 * toCheckInput(proto-loader decode); for generated Decisions, encodeCheckResponse(d) decodes to the
 * same message as toCheckResponse(d) encoded by proto-loader.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadGrpcPackages } from '../src/authz/grpc/protos.js';
import { toCheckInput, toCheckResponse } from '../src/authz/grpc/translate.js';
import { decodeCheckInput, encodeCheckResponse } from '../src/authz/grpc/wire.js';
import type { Decision } from '../src/decision/types.js';

const { AuthorizationClient } = loadGrpcPackages();
const check = (AuthorizationClient.service as any).Check;
const reqSer = check.requestSerialize as (v: unknown) => Buffer;
const reqDe = check.requestDeserialize as (b: Buffer) => unknown;
const resSer = check.responseSerialize as (v: unknown) => Buffer;
const resDe = check.responseDeserialize as (b: Buffer) => unknown;

const text = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  fc.constantFrom('', 'X-Tenant-Id', ':path', ':method', 'content-length', 'ümlaut', '😀'),
);

// google.protobuf.Value in protobufjs' bundled (camelCase) object form, nested up to depth 40 so
// the depth cut (32) is exercised.
const { value } = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.record({ stringValue: text }),
    fc.record({ numberValue: fc.double({ noNaN: true }) }),
    fc.record({ boolValue: fc.boolean() }),
    fc.constant({ nullValue: 'NULL_VALUE' }),
    fc.constant({}),
    fc.record({ structValue: tie('struct') }),
    fc.record({ listValue: fc.record({ values: fc.array(tie('value'), { maxLength: 3 }) }) }),
  ),
  struct: fc.record({ fields: fc.dictionary(text, tie('value'), { maxKeys: 3 }) }),
}));

function deep(n: number): unknown {
  let v: unknown = { stringValue: 'bottom' };
  for (let i = 0; i < n; i++)
    v = i % 2 ? { structValue: { fields: { k: v } } } : { listValue: { values: [v, { boolValue: true }] } };
  return { fields: { top: v } };
}

const request = fc.record(
  {
    method: fc.constantFrom('POST', 'GET', 'post'),
    path: fc.constantFrom('/v1/chat/completions', '/v1/messages?x=1', '/'),
    headers: fc.dictionary(text, text, { maxKeys: 8 }),
    header_map: fc.array(
      fc.record(
        { key: text, value: text, raw_value: fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)) },
        { requiredKeys: ['key'] },
      ),
      { maxLength: 4 },
    ),
    body: fc.string({ maxLength: 40 }),
    raw_body: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    metadata: fc.dictionary(text, fc.oneof(fc.constant(deep(40)), fc.constant(deep(3))), { maxKeys: 2 }),
    struct: fc.dictionary(text, value, { maxKeys: 3 }),
    extras: fc.boolean(),
  },
  { requiredKeys: [] },
);

function build(g: any): any {
  const http: any = {};
  for (const k of ['method', 'path', 'headers', 'body', 'raw_body'] as const)
    if (g[k] !== undefined) http[k] = g[k];
  if (g.header_map) http.header_map = { headers: g.header_map };
  if (g.extras) {
    http.id = 'req-1';
    http.host = 'api.example.com';
    http.scheme = 'https';
    http.query = 'a=b';
    http.size = 1234;
    http.protocol = 'HTTP/2';
  }
  const attributes: any = { request: { http } };
  if (g.extras) {
    attributes.request.time = { seconds: 1_700_000_000, nanos: 5 };
    attributes.source = {
      address: { socket_address: { address: '10.0.0.1', port_value: 1234 } },
      principal: 'p',
    };
    attributes.destination = { service: 'svc', labels: { a: 'b' } };
    attributes.context_extensions = { x: 'y' };
    attributes.tls_session = { sni: 'example.com' };
    attributes.route_metadata_context = { filter_metadata: { r: { fields: { a: { stringValue: 'b' } } } } };
  }
  const fm: any = {};
  for (const [k, v] of Object.entries(g.metadata ?? {})) fm[k] = v;
  if (g.struct && Object.keys(g.struct).length > 0) fm.jwt = { fields: g.struct };
  if (Object.keys(fm).length > 0) attributes.metadata_context = { filter_metadata: fm };
  return { attributes };
}

describe('decodeCheckInput equals toCheckInput(proto-loader decode)', () => {
  it('on generated requests (headers, header_map, body, raw_body, metadata structs, skipped fields)', () => {
    fc.assert(
      fc.property(request, (g) => {
        const bytes = reqSer(build(g));
        expect(decodeCheckInput(bytes)).toEqual(toCheckInput(reqDe(bytes)));
        // attributes.source.address (the source_ip identity source) is read by both
        expect(decodeCheckInput(bytes).sourceAddress).toBe(g.extras ? '10.0.0.1' : undefined);
      }),
      { numRuns: 1500, seed: 99 },
    );
  });

  it('an empty request and a request with only a body', () => {
    for (const r of [{}, { attributes: { request: { http: { raw_body: Buffer.from('{"a":1}') } } } }]) {
      const bytes = reqSer(r);
      expect(decodeCheckInput(bytes)).toEqual(toCheckInput(reqDe(bytes)));
    }
  });

  it('malformed protobuf is an error, not a crash or a half-read request', () => {
    const good = reqSer(build({ headers: { a: 'b' }, raw_body: Buffer.from('xyz') }));
    for (let cut = 1; cut < good.length; cut++) {
      let result: unknown;
      try {
        result = decodeCheckInput(good.subarray(0, cut));
      } catch (e) {
        expect(e).toBeInstanceOf(Error);
        continue;
      }
      // A cut at a field boundary is a valid shorter message: it must decode like proto-loader does.
      expect(result).toEqual(toCheckInput(reqDe(good.subarray(0, cut))));
    }
    expect(() => decodeCheckInput(Buffer.from([0x0f]))).toThrow(); // wire type 7
  });
});

const headers = fc.dictionary(text, text, { maxKeys: 12 });
/** What the dynamic metadata is made of (decision/metadata.ts): any subset, any values. */
const stats = fc.record(
  {
    model: text,
    chosenModel: text,
    promptTokens: fc.nat(),
    reservedTokens: fc.oneof(fc.nat(), fc.constant(0)),
    micros: fc.oneof(fc.maxSafeNat(), fc.constant(0)),
    limit: text,
    cached: fc.boolean(),
    identity: fc.dictionary(
      fc.oneof(fc.constantFrom('tenant', 'team', 'decision', 'model', 'limit'), text),
      fc.option(text, { nil: undefined }),
      { maxKeys: 4 },
    ),
  },
  { requiredKeys: [] },
);
const decision: fc.Arbitrary<Decision> = fc.oneof(
  fc.record(
    {
      kind: fc.constant('allow' as const),
      reason: fc.constantFrom('ok' as const, 'rerouted' as const, 'shadow' as const),
      upstreamHeaders: headers,
      removeHeaders: fc.array(text, { maxLength: 4 }),
      responseHeaders: headers,
      stats,
      reservation: fc.string({ minLength: 1, maxLength: 40 }),
    },
    { requiredKeys: ['kind', 'reason', 'upstreamHeaders', 'removeHeaders', 'responseHeaders', 'stats'] },
  ),
  fc.record({
    kind: fc.constant('deny' as const),
    reason: fc.constantFrom('rate-limited' as const, 'bad-request' as const, 'queued' as const),
    httpStatus: fc.constantFrom(429, 400, 403, 503, 202),
    headers,
    body: fc.string({ maxLength: 300 }),
    stats,
  }),
);

/** proto3 equality: a scalar field set to its default (0, '') is the same message as an absent one. */
function proto3(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(proto3);
  if (Buffer.isBuffer(v) || v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== 0 && x !== '') out[k] = proto3(x);
  return out;
}

describe('encodeCheckResponse equals toCheckResponse encoded by proto-loader', () => {
  it('on generated decisions (allow with headers and removals, denies of every status, dynamic metadata)', () => {
    fc.assert(
      fc.property(decision, (d) => {
        const ours = resDe(encodeCheckResponse(d));
        const reference = resDe(resSer(toCheckResponse(d)));
        expect(proto3(ours)).toEqual(proto3(reference));
      }),
      { numRuns: 1500, seed: 7 },
    );
  });

  it('large bodies and many headers (lengths of 1 to 4 varint bytes)', () => {
    for (const n of [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152]) {
      const d: Decision = {
        kind: 'deny',
        reason: 'rate-limited',
        httpStatus: 429,
        headers: { 'retry-after': '1', big: 'v'.repeat(Math.min(n, 1000)) },
        body: 'b'.repeat(n),
        stats: {},
      };
      expect(proto3(resDe(encodeCheckResponse(d)))).toEqual(proto3(resDe(resSer(toCheckResponse(d)))));
    }
  });
});
