/**
 * Wire/schema compatibility of the vendored ext_proc protos (proto/envoy/service/ext_proc/v3 and
 * proto/envoy/extensions/filters/http/ext_proc/v3/processing_mode.proto) with Envoy's official
 * definitions shipped in @grpc/grpc-js-xds deps/, by the method of proto-compat.test.ts: encode with
 * one set, decode with the other, compare, and re-encode to the exact bytes (protobufjs silently drops
 * unknown fields, so a missing or renumbered field shows up as a byte mismatch); then every vendored
 * type is compared field by field with the official type tree.
 */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { EXT_PROC_PROCESS_PATH, loadExtProcPackages } from '../src/authz/grpc/ext-proc-protos.js';
import { LOADER_OPTIONS, PROTO_DIR } from '../src/authz/grpc/protos.js';
import {
  continueResponse,
  type ExtProcProcessingRequest,
  extProcHeader,
  forwardedMetadataString,
} from '../src/settle/messages.js';

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const OFFICIAL_INCLUDES = ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) =>
  join(XDS_DEPS, d),
);
const PARSE_OPTIONS = { keepCase: true };
const CONVERSION = LOADER_OPTIONS as protobuf.IConversionOptions;
const PROTO = 'envoy/service/ext_proc/v3/external_processor.proto';
const REQ = 'envoy.service.ext_proc.v3.ProcessingRequest';
const RES = 'envoy.service.ext_proc.v3.ProcessingResponse';

function makeRoot(includeDirs: string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of includeDirs) {
      const full = join(dir, target);
      try {
        accessSync(full, constants.R_OK);
        return full;
      } catch {
        // next include dir
      }
    }
    return protobuf.util.path.resolve(origin, target);
  };
  return root;
}

let official: protobuf.Root;
let ours: protobuf.Root;

beforeAll(() => {
  official = makeRoot(OFFICIAL_INCLUDES).loadSync([PROTO], PARSE_OPTIONS);
  official.resolveAll();
  ours = makeRoot([PROTO_DIR]).loadSync([PROTO], PARSE_OPTIONS);
  ours.resolveAll();
});

const ID = 'r_3q2+7wZ/abcdefghijklmnop';

const forwardedMetadata = {
  filter_metadata: {
    'envoy.filters.http.ext_authz': {
      fields: {
        tollgate_reservation: { stringValue: ID },
        tokens: { numberValue: 4096 },
        nested: { structValue: { fields: { ok: { boolValue: true } } } },
      },
    },
  },
  typed_filter_metadata: {
    'com.example.t': { type_url: 'type.googleapis.com/google.protobuf.Struct', value: Buffer.from([1, 2]) },
  },
};

const responseHeaders = {
  response_headers: {
    headers: {
      headers: [
        { key: ':status', raw_value: Buffer.from('200') },
        { key: 'content-type', raw_value: Buffer.from('text/event-stream; charset=utf-8') },
        { key: 'content-encoding', value: 'gzip' },
        { key: 'x-tollgate-reservation', raw_value: Buffer.from(ID) },
      ],
    },
    end_of_stream: false,
  },
  metadata_context: forwardedMetadata,
  attributes: { 'envoy.filters.http.ext_proc': { fields: { 'request.path': { stringValue: '/v1/x' } } } },
  observability_mode: true,
};

const requestHeaders = {
  request_headers: {
    headers: {
      headers: [
        { key: ':method', raw_value: Buffer.from('POST') },
        {
          key: ':path',
          raw_value: Buffer.from('/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse'),
        },
        { key: 'x-tollgate-reservation', value: ID },
      ],
    },
    end_of_stream: false,
  },
  metadata_context: forwardedMetadata,
};

const responseBody = {
  response_body: {
    body: Buffer.from('data: {"choices":[{"delta":{"content":"h\u00e9llo \ud83d\ude00"}}]}\n\nda', 'utf8'),
    end_of_stream: false,
  },
  observability_mode: true,
};

const responseBodyLast = {
  response_body: { body: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff]), end_of_stream: true },
};

const responseTrailers = {
  response_trailers: { trailers: { headers: [{ key: 'grpc-status', value: '0' }] } },
};

const continueHeaders = { response_headers: { response: {} } };
const continueBody = { response_body: { response: { status: 'CONTINUE' } } };
const mutatingHeaders = {
  response_headers: {
    response: {
      status: 'CONTINUE_AND_REPLACE',
      header_mutation: {
        set_headers: [
          {
            header: { key: 'x-tollgate-settled', raw_value: Buffer.from('1') },
            append_action: 'ADD_IF_ABSENT',
          },
        ],
        remove_headers: ['x-tollgate-reservation'],
      },
      body_mutation: { clear_body: true },
      trailers: { headers: [{ key: 't', value: 'v' }] },
      clear_route_cache: true,
    },
  },
  dynamic_metadata: { fields: { tollgate: { structValue: { fields: { settled: { boolValue: true } } } } } },
  mode_override: {
    request_header_mode: 'SKIP',
    response_header_mode: 'SEND',
    request_body_mode: 'NONE',
    response_body_mode: 'STREAMED',
    request_trailer_mode: 'SKIP',
    response_trailer_mode: 'SKIP',
  },
  override_message_timeout: { seconds: 2, nanos: 500_000_000 },
};
const bodyReplace = { response_body: { response: { body_mutation: { body: Buffer.from('x') } } } };
const trailersResponse = {
  response_trailers: { header_mutation: { set_headers: [{ header: { key: 'a', value: 'b' } }] } },
};
const immediate = {
  immediate_response: {
    status: { code: 'TooManyRequests' },
    headers: { set_headers: [{ header: { key: 'retry-after', value: '3' } }] },
    body: Buffer.from('{"error":"slow down"}'),
    grpc_status: { status: 8 },
    details: 'tollgate_denied',
  },
};

function encode(root: protobuf.Root, typeName: string, obj: object): Uint8Array {
  const type = root.lookupType(typeName);
  const msg = type.fromObject(obj);
  expect(type.verify(msg)).toBeNull();
  return type.encode(msg).finish();
}

function decode(root: protobuf.Root, typeName: string, bytes: Uint8Array): Record<string, unknown> {
  const type = root.lookupType(typeName);
  return type.toObject(type.decode(bytes), CONVERSION);
}

function reencode(root: protobuf.Root, typeName: string, bytes: Uint8Array): Buffer {
  const type = root.lookupType(typeName);
  return Buffer.from(type.encode(type.decode(bytes)).finish());
}

const CASES: Array<[string, string, object]> = [
  ['ProcessingRequest (request_headers + metadata)', REQ, requestHeaders],
  ['ProcessingRequest (response_headers + forwarded metadata)', REQ, responseHeaders],
  ['ProcessingRequest (response_body chunk)', REQ, responseBody],
  ['ProcessingRequest (last response_body chunk)', REQ, responseBodyLast],
  ['ProcessingRequest (response_trailers)', REQ, responseTrailers],
  ['ProcessingResponse (continue headers)', RES, continueHeaders],
  ['ProcessingResponse (continue body)', RES, continueBody],
  ['ProcessingResponse (mutating headers, mode_override, timeout)', RES, mutatingHeaders],
  ['ProcessingResponse (body replace)', RES, bodyReplace],
  ['ProcessingResponse (trailers)', RES, trailersResponse],
  ['ProcessingResponse (immediate_response)', RES, immediate],
];

describe('ext_proc wire compatibility with official Envoy protos', () => {
  for (const [label, typeName, obj] of CASES) {
    it(`${label}: official -> ours`, () => {
      const bytes = encode(official, typeName, obj);
      expect(bytes.length).toBeGreaterThan(1);
      expect(decode(ours, typeName, bytes)).toEqual(decode(official, typeName, bytes));
      expect(reencode(ours, typeName, bytes).equals(Buffer.from(bytes))).toBe(true);
    });

    it(`${label}: ours -> official`, () => {
      const bytes = encode(ours, typeName, obj);
      expect(decode(official, typeName, bytes)).toEqual(decode(ours, typeName, bytes));
      expect(reencode(official, typeName, bytes).equals(Buffer.from(bytes))).toBe(true);
      expect(Buffer.from(bytes).equals(Buffer.from(encode(official, typeName, obj)))).toBe(true);
    });
  }

  it('the server-side definitions decode what Envoy sends and the helpers read it', () => {
    const { externalProcessor } = loadExtProcPackages();
    expect(Object.keys(externalProcessor)).toEqual(['Process']);
    const m = externalProcessor.Process;
    expect(m.path).toBe(EXT_PROC_PROCESS_PATH);
    expect(m.requestStream).toBe(true);
    expect(m.responseStream).toBe(true);

    const hdr = m.requestDeserialize(
      Buffer.from(encode(official, REQ, responseHeaders)),
    ) as ExtProcProcessingRequest;
    expect(hdr.request).toBe('response_headers');
    expect(hdr.observability_mode).toBe(true);
    expect(extProcHeader(hdr.response_headers, ':status')).toBe('200');
    expect(extProcHeader(hdr.response_headers, 'content-encoding')).toBe('gzip');
    expect(extProcHeader(hdr.response_headers, 'x-tollgate-reservation')).toBe(ID);
    expect(extProcHeader(hdr.response_headers, 'absent')).toBeUndefined();
    expect(forwardedMetadataString(hdr, 'envoy.filters.http.ext_authz', 'tollgate_reservation')).toBe(ID);
    expect(forwardedMetadataString(hdr, 'envoy.filters.http.ext_authz', 'tokens')).toBeUndefined();
    expect(forwardedMetadataString(hdr, 'other', 'tollgate_reservation')).toBeUndefined();

    const body = m.requestDeserialize(
      Buffer.from(encode(official, REQ, responseBody)),
    ) as ExtProcProcessingRequest;
    expect(body.request).toBe('response_body');
    expect(Buffer.isBuffer(body.response_body?.body)).toBe(true);
    expect(body.response_body?.body?.equals(responseBody.response_body.body)).toBe(true);
    expect(body.response_body?.end_of_stream).toBeFalsy();
    const last = m.requestDeserialize(
      Buffer.from(encode(official, REQ, responseBodyLast)),
    ) as ExtProcProcessingRequest;
    expect(last.response_body?.end_of_stream).toBe(true);
  });

  it('continueResponse answers each message kind with the matching empty response, as Envoy reads it', () => {
    const { externalProcessor } = loadExtProcPackages();
    const resType = official.lookupType(RES);
    for (const kind of [
      'request_headers',
      'response_headers',
      'request_body',
      'response_body',
      'request_trailers',
      'response_trailers',
    ] as const) {
      const wire = externalProcessor.Process.responseSerialize(continueResponse(kind));
      const decoded = resType.toObject(resType.decode(wire), CONVERSION) as Record<string, unknown>;
      expect(decoded.response).toBe(kind);
      const inner = decoded[kind] as Record<string, unknown>;
      expect(inner.header_mutation).toBeUndefined();
      expect((inner.response as Record<string, unknown> | undefined)?.body_mutation).toBeUndefined();
      expect((inner.response as Record<string, unknown> | undefined)?.status).toBeUndefined(); // CONTINUE
      expect(Buffer.from(wire).equals(Buffer.from(encode(official, RES, continueResponse(kind))))).toBe(true);
    }
  });

  it('enum numbers match upstream', () => {
    const mode = ours.lookupType('envoy.extensions.filters.http.ext_proc.v3.ProcessingMode');
    expect((mode.lookup('HeaderSendMode') as protobuf.Enum).values).toEqual({ DEFAULT: 0, SEND: 1, SKIP: 2 });
    expect((mode.lookup('BodySendMode') as protobuf.Enum).values).toEqual({
      NONE: 0,
      STREAMED: 1,
      BUFFERED: 2,
      BUFFERED_PARTIAL: 3,
    });
    expect(ours.lookupEnum('envoy.service.ext_proc.v3.CommonResponse.ResponseStatus').values).toEqual({
      CONTINUE: 0,
      CONTINUE_AND_REPLACE: 1,
    });
  });
});

type Reflected = protobuf.Type | protobuf.Enum;

function collect(ns: protobuf.NamespaceBase, out: Reflected[] = []): Reflected[] {
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type || nested instanceof protobuf.Enum) out.push(nested);
    if (nested instanceof protobuf.Namespace || nested instanceof protobuf.Type) collect(nested, out);
  }
  return out;
}

function describeField(f: protobuf.Field): Record<string, unknown> {
  f.resolve();
  return {
    id: f.id,
    type: f.resolvedType ? f.resolvedType.fullName : f.type,
    repeated: f.repeated,
    map: f.map,
    keyType: f instanceof protobuf.MapField ? f.keyType : undefined,
    oneof: f.partOf ? f.partOf.name : undefined,
  };
}

describe('ext_proc schema matches official type tree', () => {
  it('every vendored envoy.* type has identical fields and numbers', () => {
    const mine = collect(ours).filter((t) => /^\.envoy\./.test(t.fullName));
    const checked: string[] = [];
    for (const t of mine) {
      const up = official.lookup(t.fullName);
      expect(up, `${t.fullName} missing from official protos`).not.toBeNull();
      if (t instanceof protobuf.Enum) {
        expect(up).toBeInstanceOf(protobuf.Enum);
        expect(t.values, t.fullName).toEqual((up as protobuf.Enum).values);
      } else {
        expect(up).toBeInstanceOf(protobuf.Type);
        const upType = up as protobuf.Type;
        const ourFields = Object.fromEntries(t.fieldsArray.map((f) => [f.name, describeField(f)]));
        const upFields = Object.fromEntries(upType.fieldsArray.map((f) => [f.name, describeField(f)]));
        expect(ourFields, t.fullName).toEqual(upFields);
        expect(t.oneofsArray.map((o) => o.name).sort(), t.fullName).toEqual(
          upType.oneofsArray.map((o) => o.name).sort(),
        );
      }
      checked.push(t.fullName);
    }
    for (const must of [
      '.envoy.service.ext_proc.v3.ProcessingRequest',
      '.envoy.service.ext_proc.v3.ProcessingResponse',
      '.envoy.service.ext_proc.v3.HttpHeaders',
      '.envoy.service.ext_proc.v3.HttpBody',
      '.envoy.service.ext_proc.v3.HttpTrailers',
      '.envoy.service.ext_proc.v3.HeadersResponse',
      '.envoy.service.ext_proc.v3.BodyResponse',
      '.envoy.service.ext_proc.v3.TrailersResponse',
      '.envoy.service.ext_proc.v3.CommonResponse',
      '.envoy.service.ext_proc.v3.ImmediateResponse',
      '.envoy.service.ext_proc.v3.HeaderMutation',
      '.envoy.service.ext_proc.v3.BodyMutation',
      '.envoy.service.ext_proc.v3.GrpcStatus',
      '.envoy.extensions.filters.http.ext_proc.v3.ProcessingMode',
      '.envoy.config.core.v3.HeaderMap',
      '.envoy.config.core.v3.HeaderValue',
      '.envoy.config.core.v3.Metadata',
      '.envoy.type.v3.HttpStatus',
    ]) {
      expect(checked).toContain(must);
    }
  });

  it('ExternalProcessor service methods match upstream', () => {
    const shape = (s: protobuf.Service) =>
      s.methodsArray.map((m) => ({
        name: m.name,
        req: (m.resolve() as protobuf.Method).resolvedRequestType?.fullName,
        res: m.resolvedResponseType?.fullName,
        reqStream: !!m.requestStream,
        resStream: !!m.responseStream,
      }));
    expect(shape(ours.lookupService('envoy.service.ext_proc.v3.ExternalProcessor'))).toEqual(
      shape(official.lookupService('envoy.service.ext_proc.v3.ExternalProcessor')),
    );
  });
});
