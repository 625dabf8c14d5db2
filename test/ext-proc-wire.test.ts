/**
 * The direct Process path's codec (src/authz/grpc/ext-proc-wire.ts) against grpc-js/proto-loader:
 * ProcessingRequests generated as Envoy's OFFICIAL protos describe them (every field, Struct values of
 * every kind, headers with value and raw_value, unknown fields of every wire type at several levels)
 * decode to deep-equal objects; random and mutated bytes never throw anything but ProtoDecodeError;
 * the pre-encoded continue frames are the official ProcessingResponse of each kind.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadExtProcPackages } from '../src/authz/grpc/ext-proc-protos.js';
import {
  CONTINUE_FRAMES,
  decodeProcessingRequest,
  ProtoDecodeError,
} from '../src/authz/grpc/ext-proc-wire.js';
import { continueResponse } from '../src/settle/messages.js';
import { officialExtProc } from './helpers/ext-proc.js';
import { structArbitraries } from './helpers/struct-arbitrary.js';

const Process = (loadExtProcPackages().externalProcessor as any).Process;
const viaProtoLoader = (b: Buffer): unknown => Process.requestDeserialize(b);
const official = officialExtProc();
const Req = official.lookupType('envoy.service.ext_proc.v3.ProcessingRequest');
const Res = official.lookupType('envoy.service.ext_proc.v3.ProcessingResponse');
const encode = (m: Record<string, unknown>) => Buffer.from(Req.encode(Req.fromObject(m)).finish());

const KINDS = [
  'request_headers',
  'response_headers',
  'request_body',
  'response_body',
  'request_trailers',
  'response_trailers',
] as const;

const text = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom(
    '',
    ':status',
    'content-type',
    'x-tollgate-reservation',
    'ümlaut',
    '😀',
    'tollgate_reservation',
  ),
);
const bytes = fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u));

const { struct } = structArbitraries(text);

const headerValue = fc.record(
  { key: text, value: text, raw_value: bytes },
  { requiredKeys: [] }, // Envoy sends value or raw_value; any subset decodes
);
const headerMap = fc.record({ headers: fc.array(headerValue, { maxLength: 5 }) });
const structMap = fc.dictionary(text, struct, { maxKeys: 2 });
const httpHeaders = fc.record(
  { headers: headerMap, attributes: structMap, end_of_stream: fc.boolean() },
  { requiredKeys: [] },
);
const httpBody = fc.record({ body: bytes, end_of_stream: fc.boolean() }, { requiredKeys: [] });
const httpTrailers = fc.record({ trailers: headerMap }, { requiredKeys: [] });
const member = (k: (typeof KINDS)[number]) =>
  k.endsWith('headers') ? httpHeaders : k.endsWith('body') ? httpBody : httpTrailers;
const metadataContext = fc.record(
  {
    filter_metadata: structMap,
    typed_filter_metadata: fc.dictionary(text, fc.record({ type_url: text, value: bytes }), { maxKeys: 2 }),
  },
  { requiredKeys: [] },
);

const request = fc
  .tuple(
    fc.option(fc.constantFrom(...KINDS), { nil: undefined }),
    fc.record(
      { metadata_context: metadataContext, attributes: structMap, observability_mode: fc.boolean() },
      { requiredKeys: [] },
    ),
  )
  .chain(([kind, rest]) =>
    kind === undefined ? fc.constant(rest) : member(kind).map((m) => ({ ...rest, [kind]: m })),
  );

// Unknown fields of every wire type (field numbers the vendored protos do not use at any level).
const varint = (n: number): number[] => {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
};
const unknownField = fc
  .tuple(fc.integer({ min: 20, max: 5000 }), fc.constantFrom(0, 1, 2, 3, 5), bytes)
  .map(([f, wt, b]) => {
    const tag = varint(f * 8 + wt);
    switch (wt) {
      case 0:
        return Buffer.from([...tag, ...varint(b.length * 1000 + 7)]);
      case 1:
        return Buffer.from([...tag, 1, 2, 3, 4, 5, 6, 7, 8]);
      case 2:
        return Buffer.from([...tag, ...varint(b.length), ...b]);
      case 3: // a group holding a varint field and a nested empty group, then its end tag
        return Buffer.from([...tag, 0x08, 0x96, 0x01, 0x1b, 0x1c, ...varint(f * 8 + 4)]);
      default:
        return Buffer.from([...tag, 9, 9, 9, 9]);
    }
  });
const unknowns = fc.array(unknownField, { maxLength: 3 }).map((a) => Buffer.concat(a));

/** A length-delimited field `f` holding `inner`. */
const wrap = (f: number, inner: Buffer) =>
  Buffer.from([...varint(f * 8 + 2), ...varint(inner.length), ...inner]);

describe('ProcessingRequest decoding', () => {
  it('equals proto-loader on generated messages (official protos), unknown fields included', () => {
    fc.assert(
      fc.property(request, unknowns, unknowns, (m, before, after) => {
        const wire = Buffer.concat([before, encode(m), after]);
        const ours = decodeProcessingRequest(wire);
        expect(ours).toStrictEqual(viaProtoLoader(wire));
      }),
      { numRuns: 600 },
    );
  });

  it('unknown fields inside nested messages (body, header value, Struct value) are skipped', () => {
    fc.assert(
      fc.property(bytes, text, unknowns, (body, s, extra) => {
        const httpBody = Buffer.concat([wrap(1, body), extra, Buffer.from([0x10, 1])]);
        const hv = Buffer.concat([extra, wrap(1, Buffer.from('content-type')), wrap(3, Buffer.from(s))]);
        const val = Buffer.concat([extra, wrap(3, Buffer.from(s))]);
        const entry = Buffer.concat([wrap(1, Buffer.from('k')), wrap(2, val)]);
        const nsEntry = Buffer.concat([
          wrap(1, Buffer.from('ns')),
          wrap(2, Buffer.concat([wrap(1, entry), extra])),
        ]);
        const wire = Buffer.concat([
          wrap(5, httpBody),
          wrap(3, wrap(1, Buffer.concat([wrap(1, hv), extra]))),
          wrap(8, Buffer.concat([extra, wrap(1, nsEntry)])),
        ]);
        const ours = decodeProcessingRequest(wire);
        expect(ours).toStrictEqual(viaProtoLoader(wire));
        expect(ours.request).toBe('response_body'); // two oneof members (3, 5): the higher number, as protobufjs
        expect(ours.response_body?.body).toEqual(body);
        expect(ours.metadata_context?.filter_metadata?.ns?.fields?.k?.stringValue).toBe(s);
      }),
      { numRuns: 200 },
    );
  });

  it('the bench and test clients’ messages, a merge of two serialized messages, and a sub-range', () => {
    const meta = encode({
      metadata_context: {
        filter_metadata: {
          'envoy.filters.http.ext_authz': { fields: { tollgate_reservation: { stringValue: 'r.1' } } },
        },
      },
    });
    const headers = encode({
      response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } },
      observability_mode: true,
    });
    const wire = Buffer.concat([meta, headers]);
    expect(decodeProcessingRequest(wire)).toStrictEqual(viaProtoLoader(wire));
    const framed = Buffer.concat([Buffer.from([1, 2, 3]), wire, Buffer.from([0xff])]);
    expect(decodeProcessingRequest(framed, 3, 3 + wire.length)).toStrictEqual(viaProtoLoader(wire));
    expect(decodeProcessingRequest(Buffer.alloc(0))).toStrictEqual(viaProtoLoader(Buffer.alloc(0)));
  });

  it('malformed input throws ProtoDecodeError: truncated varints and lengths, bad wire types, deep nesting', () => {
    const bad: [string, Buffer][] = [
      ['a truncated tag', Buffer.from([0x80])],
      ['a truncated varint value', Buffer.from([0x50, 0x80])],
      ['a varint over 10 bytes', Buffer.from([0x50, ...Array(11).fill(0xff), 0x01])],
      ['a length past the end', Buffer.from([0x2a, 0x05, 0x0a])],
      ['a length past the end of its parent', Buffer.from([0x2a, 0x02, 0x0a, 0x05, 1, 2, 3, 4, 5])],
      ['a truncated fixed64', Buffer.from([0xa1, 0x01, 1, 2, 3])],
      ['a truncated fixed32', Buffer.from([0xa5, 0x01, 1])],
      ['wire type 4 outside a group', Buffer.from([0xa4, 0x01])],
      ['wire type 6', Buffer.from([0xa6, 0x01])],
      ['wire type 7', Buffer.from([0x0f])],
      ['an unterminated group', Buffer.from([0xa3, 0x01, 0x08, 0x01])],
      ['groups nested past 100', Buffer.from(Array(300).fill([0xa3, 0x01]).flat())],
    ];
    // Struct values nested 300 deep: Value.struct_value(5) → Struct.fields(1) entry → value(2) → ...
    let v = Buffer.from([0x1a, 0]);
    for (let i = 0; i < 300; i++)
      v = wrap(5, wrap(1, Buffer.concat([wrap(1, Buffer.from('k')), wrap(2, v)])));
    bad.push([
      'Struct nested 300 deep',
      wrap(
        9,
        Buffer.concat([
          wrap(1, Buffer.from('a')),
          wrap(2, wrap(1, Buffer.concat([wrap(1, Buffer.from('k')), wrap(2, v)]))),
        ]),
      ),
    ]);
    for (const [what, b] of bad) {
      expect(() => decodeProcessingRequest(b), what).toThrow(ProtoDecodeError);
      expect(() => viaProtoLoader(b), `proto-loader, ${what}`).toThrow();
    }
  });

  it('random and mutated bytes: a result or ProtoDecodeError, nothing else, in linear time', () => {
    const valid = request.map((m) => encode(m));
    const mutated = fc
      .tuple(
        valid,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(),
      )
      .map(([b, flips, cut]) => {
        const out = Buffer.from(b);
        for (const [at, byte] of flips) if (out.length > 0) out[at % out.length] = byte;
        return out.subarray(0, out.length === 0 ? 0 : cut % (out.length + 1));
      });
    const random = fc.uint8Array({ maxLength: 200 }).map((u) => Buffer.from(u));
    fc.assert(
      fc.property(fc.oneof(mutated, random), (b) => {
        const t0 = performance.now();
        try {
          decodeProcessingRequest(b);
        } catch (err) {
          expect(err).toBeInstanceOf(ProtoDecodeError);
        }
        expect(performance.now() - t0).toBeLessThan(200);
      }),
      { numRuns: 3000 },
    );
  });
});

describe('continue frames', () => {
  it('each is the official ProcessingResponse of its kind, the bytes proto-loader gives continueResponse', () => {
    for (const kind of KINDS) {
      const f = CONTINUE_FRAMES[kind];
      expect(f[0]).toBe(0);
      expect(f.readUInt32BE(1)).toBe(f.length - 5);
      const msg = f.subarray(5);
      const decoded = Res.toObject(Res.decode(msg), { oneofs: true }) as Record<string, any>;
      expect(decoded.response).toBe(kind);
      expect(decoded[kind]).toEqual(kind.endsWith('trailers') ? {} : { response: {} });
      expect(msg).toEqual(Process.responseSerialize(continueResponse(kind)));
    }
  });
});
