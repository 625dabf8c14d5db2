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
import { decodeCheckInput, encodeCheckResponse, ProtoDecodeError } from '../src/authz/grpc/wire.js';
import type { Decision } from '../src/decision/types.js';
import { structArbitraries } from './helpers/struct-arbitrary.js';

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
const { value } = structArbitraries(text, { noNaN: true });

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
        expect(e).toBeInstanceOf(ProtoDecodeError);
        continue;
      }
      // A cut at a field boundary is a valid shorter message: it must decode like proto-loader does.
      expect(result).toEqual(toCheckInput(reqDe(good.subarray(0, cut))));
    }
    expect(() => decodeCheckInput(Buffer.from([0x0f]))).toThrow(ProtoDecodeError); // wire type 7
  });

  it('unknown groups (wire types 3..4) are skipped at every level, as protobufjs skips them', () => {
    const varint = (n: number): number[] => {
      const out: number[] = [];
      for (; n >= 0x80; n >>>= 7) out.push((n & 0x7f) | 0x80);
      return [...out, n];
    };
    const tag = (field: number, wt: number) => Buffer.from(varint((field << 3) | wt));
    const wrap = (field: number, ...parts: Buffer[]) => {
      const body = Buffer.concat(parts);
      return Buffer.concat([tag(field, 2), Buffer.from(varint(body.length)), body]);
    };
    const str = (field: number, s: string) => wrap(field, Buffer.from(s));
    // group 77 { varint, fixed64, fixed32, bytes, group 78 { varint } }
    const group = Buffer.concat([
      tag(77, 3),
      tag(1, 0),
      Buffer.from([0x96, 0x01]),
      tag(2, 1),
      Buffer.alloc(8, 7),
      tag(3, 5),
      Buffer.alloc(4, 9),
      str(4, 'skipped'),
      tag(78, 3),
      tag(1, 0),
      Buffer.from([5]),
      tag(78, 4),
      tag(77, 4),
    ]);
    const request = (g: Buffer, inHttp = g) =>
      Buffer.concat([
        g,
        wrap(
          1, // attributes
          g,
          wrap(1, wrap(1, wrap(1, str(2, '10.0.0.1'), g), g), g), // source.address.socket_address.address
          wrap(
            4, // request
            g,
            wrap(
              2, // http
              str(2, 'POST'),
              g,
              wrap(3, str(1, 'X-Tenant'), g, str(2, 'acme')),
              str(4, '/v1/chat/completions'),
              wrap(13, g, wrap(1, str(1, 'raw'), g, str(2, 'v'))),
              str(12, '{"model":"m"}'),
              inHttp,
            ),
          ),
          wrap(
            11, // metadata_context.filter_metadata entry → Struct
            g,
            wrap(
              1,
              str(1, 'jwt'),
              g,
              wrap(
                2,
                g,
                wrap(
                  1, // fields entry → Value.list_value → Value.string_value
                  str(1, 'sub'),
                  g,
                  wrap(2, g, wrap(6, g, wrap(1, str(3, 'u1'), g))),
                ),
              ),
            ),
          ),
        ),
        g,
      ]);
    const plain = request(Buffer.alloc(0));
    const grouped = request(group);
    const reference = toCheckInput(reqDe(grouped)); // proto-loader (protobufjs) skips groups
    expect(decodeCheckInput(grouped)).toEqual(reference);
    expect(decodeCheckInput(grouped)).toEqual(decodeCheckInput(plain));
    expect(reference).toEqual(toCheckInput(reqDe(plain)));
    expect(decodeCheckInput(grouped)).toMatchObject({
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'x-tenant': 'acme' },
      metadata: { jwt: { sub: ['u1'] } },
      sourceAddress: '10.0.0.1',
    });

    // Malformed groups are errors in both; nesting follows protobufjs' limit (100) exactly.
    const nested = (n: number) => Buffer.concat([...Array(n).fill(tag(99, 3)), ...Array(n).fill(tag(99, 4))]);
    const bad: [string, Buffer][] = [
      ['an unterminated group', Buffer.concat([plain, tag(77, 3), tag(1, 0), Buffer.from([1])])],
      ['an end tag outside a group', Buffer.concat([plain, tag(77, 4)])],
      ['a truncated field in a group', Buffer.concat([plain, tag(77, 3), tag(1, 1), Buffer.alloc(3)])],
      ['groups nested 102 deep', Buffer.concat([nested(102), plain])],
      ['a group nested past 100 in the http message', request(Buffer.alloc(0), nested(99))],
    ];
    for (const [what, b] of bad) {
      expect(() => reqDe(b), `proto-loader, ${what}`).toThrow();
      expect(() => decodeCheckInput(b), what).toThrow(ProtoDecodeError);
    }
    for (const b of [Buffer.concat([nested(101), plain]), request(Buffer.alloc(0), nested(98))])
      expect(decodeCheckInput(b)).toEqual(toCheckInput(reqDe(b)));
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
