/**
 * Wire/schema compatibility of the vendored protos in proto/ with Envoy's
 * official definitions (shipped with @grpc/grpc-js-xds under deps/).
 *
 * Messages are encoded with one set of definitions and decoded with the other;
 * the decoded objects must match and re-encoding must reproduce the exact
 * bytes (protobufjs silently drops unknown fields, so a missing or renumbered
 * field shows up as a byte mismatch). In addition every message/enum we
 * vendor under envoy.* and google.rpc.* is compared field by field with the
 * official type tree.
 */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { LOADER_OPTIONS, loadGrpcPackages, PROTO_DIR } from '../src/authz/grpc/protos.js';
import { toCheckResponse } from '../src/authz/grpc/translate.js';
import { encodeCheckResponse } from '../src/authz/grpc/wire.js';
import type { Decision } from '../src/decision/types.js';

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
// udpa/ and xds/ both live under deps/xds.
const OFFICIAL_INCLUDES = ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) =>
  join(XDS_DEPS, d),
);

const PARSE_OPTIONS = { keepCase: true };
/** Same conversion options as the server's proto-loader configuration. */
const CONVERSION = LOADER_OPTIONS as protobuf.IConversionOptions;

function makeRoot(includeDirs: string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    for (const dir of includeDirs) {
      const full = join(dir, target);
      try {
        accessSync(full, constants.R_OK);
        return full;
      } catch {
        // try next include dir
      }
    }
    return protobuf.util.path.resolve(origin, target);
  };
  return root;
}

const SERVICE_PROTOS = ['envoy/service/auth/v3/external_auth.proto'];

let official: protobuf.Root;
let ours: protobuf.Root;

beforeAll(() => {
  official = makeRoot(OFFICIAL_INCLUDES).loadSync(SERVICE_PROTOS, PARSE_OPTIONS);
  official.resolveAll();
  ours = makeRoot([PROTO_DIR]).loadSync([...SERVICE_PROTOS, 'grpc/health/v1/health.proto'], PARSE_OPTIONS);
  ours.resolveAll();
});

const structValue = {
  fields: {
    sub: { stringValue: 'user-123' },
    tier: { stringValue: 'gold' },
    quota: { numberValue: 12.5 },
    admin: { boolValue: false },
    scopes: { listValue: { values: [{ stringValue: 'a' }, { stringValue: 'b' }] } },
    nested: { structValue: { fields: { x: { nullValue: 'NULL_VALUE' } } } },
  },
};

const checkRequest = {
  attributes: {
    source: {
      address: { socket_address: { address: '10.0.0.7', port_value: 51234 } },
      principal: 'spiffe://cluster.local/ns/default/sa/client',
      labels: { app: 'client' },
    },
    destination: {
      address: { socket_address: { address: '10.0.0.8', port_value: 8080, protocol: 'TCP' } },
    },
    request: {
      time: { seconds: 1_700_000_000, nanos: 123_000_000 },
      http: {
        id: 'req-42',
        method: 'POST',
        headers: {
          ':authority': 'llm.example.com',
          'content-type': 'application/json',
          'x-api-key': 'k-abc',
        },
        header_map: {
          headers: [
            { key: 'x-raw', raw_value: Buffer.from([0xff, 0x00, 0x41]) },
            { key: 'x-plain', value: 'v' },
          ],
        },
        path: '/v1/chat/completions?stream=true',
        host: 'llm.example.com',
        scheme: 'https',
        size: 4_294_967_301, // > 2^32, exercises int64
        protocol: 'HTTP/2',
        body: '{"model":"gpt-4o","messages":[{"role":"user","content":"héllo"}]}',
        raw_body: Buffer.from('{"model":"gpt-4o"}\u0000\u00ff', 'latin1'),
      },
    },
    context_extensions: { tenant: 'acme', route: 'chat' },
    metadata_context: {
      filter_metadata: { 'envoy.filters.http.jwt_authn': structValue },
      typed_filter_metadata: {
        'com.example.t': {
          type_url: 'type.googleapis.com/google.protobuf.Struct',
          value: Buffer.from([1, 2]),
        },
      },
    },
    route_metadata_context: { filter_metadata: { tollgate: { fields: { limit: { numberValue: 100 } } } } },
    tls_session: { sni: 'llm.example.com' },
  },
};

const deniedResponse = {
  status: { code: 8, message: 'token budget exhausted' },
  denied_response: {
    status: { code: 'TooManyRequests' },
    headers: [
      {
        header: { key: 'retry-after', value: '17' },
        append_action: 'OVERWRITE_IF_EXISTS_OR_ADD',
      },
      {
        header: { key: 'x-ratelimit-remaining-tokens', value: '0' },
        append: { value: false },
        append_action: 'ADD_IF_ABSENT',
        keep_empty_value: true,
      },
    ],
    body: '{"error":{"type":"rate_limit_exceeded"}}',
  },
  dynamic_metadata: { fields: { tokens: { numberValue: 4096 } } },
};

const okResponse = {
  status: { code: 0 },
  ok_response: {
    headers: [
      { header: { key: 'x-tollgate-tenant', value: 'acme' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
    ],
    headers_to_remove: ['x-api-key', 'authorization'],
    response_headers_to_add: [
      {
        header: { key: 'x-ratelimit-remaining-tokens', value: '9000' },
        append_action: 'OVERWRITE_IF_EXISTS',
      },
    ],
    query_parameters_to_set: [{ key: 'tenant', value: 'acme' }],
    query_parameters_to_remove: ['api_key'],
    dynamic_metadata: { fields: { legacy: { boolValue: true } } },
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
  ['CheckRequest', 'envoy.service.auth.v3.CheckRequest', checkRequest],
  ['CheckResponse (denied)', 'envoy.service.auth.v3.CheckResponse', deniedResponse],
  ['CheckResponse (ok)', 'envoy.service.auth.v3.CheckResponse', okResponse],
];

describe('wire compatibility with official Envoy protos', () => {
  for (const [label, typeName, obj] of CASES) {
    it(`${label}: official -> ours`, () => {
      const bytes = encode(official, typeName, obj);
      expect(bytes.length).toBeGreaterThan(10);
      const viaOurs = decode(ours, typeName, bytes);
      expect(viaOurs).toEqual(decode(official, typeName, bytes));
      // Nothing was dropped as an unknown field.
      expect(reencode(ours, typeName, bytes).equals(Buffer.from(bytes))).toBe(true);
    });

    it(`${label}: ours -> official`, () => {
      const bytes = encode(ours, typeName, obj);
      expect(decode(official, typeName, bytes)).toEqual(decode(ours, typeName, bytes));
      expect(reencode(official, typeName, bytes).equals(Buffer.from(bytes))).toBe(true);
      // Both definitions produce identical encodings of the same object.
      expect(Buffer.from(bytes).equals(Buffer.from(encode(official, typeName, obj)))).toBe(true);
    });
  }

  it('decodes the values the server relies on', () => {
    const req = decode(
      ours,
      'envoy.service.auth.v3.CheckRequest',
      encode(official, 'envoy.service.auth.v3.CheckRequest', checkRequest),
    ) as any;
    const http = req.attributes.request.http;
    expect(http.method).toBe('POST');
    expect(http.path).toBe('/v1/chat/completions?stream=true');
    expect(http.headers['x-api-key']).toBe('k-abc');
    expect(http.size).toBe(4_294_967_301);
    expect(Buffer.from(http.raw_body).equals(checkRequest.attributes.request.http.raw_body)).toBe(true);
    expect(req.attributes.context_extensions).toEqual({ tenant: 'acme', route: 'chat' });
    expect(
      req.attributes.metadata_context.filter_metadata['envoy.filters.http.jwt_authn'].fields.sub,
    ).toEqual({
      stringValue: 'user-123',
      kind: 'stringValue',
    });

    const denied = decode(
      official,
      'envoy.service.auth.v3.CheckResponse',
      encode(ours, 'envoy.service.auth.v3.CheckResponse', deniedResponse),
    ) as any;
    expect(denied.http_response).toBe('denied_response');
    expect(denied.status.code).toBe(8);
    expect(denied.denied_response.status.code).toBe('TooManyRequests');
    expect(denied.denied_response.headers[0].append_action).toBe('OVERWRITE_IF_EXISTS_OR_ADD');
    expect(denied.denied_response.body).toBe(deniedResponse.denied_response.body);

    const ok = decode(
      official,
      'envoy.service.auth.v3.CheckResponse',
      encode(ours, 'envoy.service.auth.v3.CheckResponse', okResponse),
    ) as any;
    expect(ok.http_response).toBe('ok_response');
    expect(ok.ok_response.headers_to_remove).toEqual(['x-api-key', 'authorization']);
    expect(ok.ok_response.response_headers_to_add[0]).toEqual({
      header: { key: 'x-ratelimit-remaining-tokens', value: '9000' },
      append_action: 'OVERWRITE_IF_EXISTS',
    });
  });

  it('enum numbers match upstream', () => {
    const statusCode = ours.lookupEnum('envoy.type.v3.StatusCode').values;
    expect(statusCode.OK).toBe(200);
    expect(statusCode.Accepted).toBe(202);
    expect(statusCode.TooManyRequests).toBe(429);
    expect(statusCode.ServiceUnavailable).toBe(503);
    expect(statusCode.Forbidden).toBe(403);
    expect(ours.lookupEnum('envoy.config.core.v3.HeaderValueOption.HeaderAppendAction').values).toEqual({
      APPEND_IF_EXISTS_OR_ADD: 0,
      ADD_IF_ABSENT: 1,
      OVERWRITE_IF_EXISTS_OR_ADD: 2,
      OVERWRITE_IF_EXISTS: 3,
    });
  });
});

describe('server-side proto-loader definitions', () => {
  it('LOADER_OPTIONS only needs proto/ on the include path', () => {
    expect(LOADER_OPTIONS.includeDirs).toEqual([PROTO_DIR]);
  });

  it('Authorization.Check (de)serializers interoperate with official encodings', () => {
    const { authorization, health } = loadGrpcPackages();
    expect(Object.keys(authorization)).toEqual(['Check']);
    expect(Object.keys(health).sort()).toEqual(['Check', 'Watch']);
    const check = authorization.Check;
    expect(check.path).toBe('/envoy.service.auth.v3.Authorization/Check');
    expect(health.Check.path).toBe('/grpc.health.v1.Health/Check');
    expect(health.Watch.responseStream).toBe(true);

    const reqType = official.lookupType('envoy.service.auth.v3.CheckRequest');
    const reqBytes = Buffer.from(encode(official, reqType.fullName.slice(1), checkRequest));
    expect(check.requestDeserialize(reqBytes)).toEqual(
      reqType.toObject(reqType.decode(reqBytes), CONVERSION),
    );

    const resType = official.lookupType('envoy.service.auth.v3.CheckResponse');
    for (const res of [deniedResponse, okResponse]) {
      const wire = check.responseSerialize(res);
      const expected = encode(official, 'envoy.service.auth.v3.CheckResponse', res);
      expect(Buffer.from(wire).equals(Buffer.from(expected))).toBe(true);
      expect(resType.toObject(resType.decode(wire), CONVERSION)).toEqual(check.responseDeserialize(wire));
    }
  });
});

describe("tollgate's own CheckResponses, read with the official protos", () => {
  const stats = {} as Decision['stats'];
  const allow: Decision = {
    kind: 'allow',
    reason: 'rerouted',
    upstreamHeaders: { 'x-tollgate-model': 'gpt-4o-mini', 'x-tollgate-rerouted-from': 'gpt-4o' },
    removeHeaders: ['x-tollgate-degraded'],
    responseHeaders: {
      'x-ratelimit-remaining-tokens': '9000',
      'x-ratelimit-limit-tokens': '30000',
      'x-tollgate-model': 'gpt-4o-mini',
    },
    stats,
  };
  const deny: Decision = {
    kind: 'deny',
    reason: 'rate-limited',
    httpStatus: 429,
    headers: { 'retry-after': '4', 'x-ratelimit-remaining-tokens': '0' },
    body: '{"error":{}}',
    stats,
  };
  const resType = () => official.lookupType('envoy.service.auth.v3.CheckResponse');
  const read = (bytes: Buffer) => resType().toObject(resType().decode(bytes), CONVERSION) as any;

  it('allow: response_headers_to_add are ADD_IF_ABSENT (the provider keeps its own x-ratelimit-*), upstream headers overwrite', () => {
    const ok = read(encodeCheckResponse(allow)).ok_response;
    expect(ok.response_headers_to_add.map((h: any) => [h.header.key, h.append_action])).toEqual([
      ['x-ratelimit-remaining-tokens', 'ADD_IF_ABSENT'],
      ['x-ratelimit-limit-tokens', 'ADD_IF_ABSENT'],
      ['x-tollgate-model', 'ADD_IF_ABSENT'],
    ]);
    // the deprecated `append` stays unset, so Envoy reads append_action (ext_authz_grpc_impl.cc)
    for (const h of [...ok.response_headers_to_add, ...ok.headers]) expect(h.append).toBeUndefined();
    expect(ok.headers.map((h: any) => h.append_action)).toEqual([
      'OVERWRITE_IF_EXISTS_OR_ADD',
      'OVERWRITE_IF_EXISTS_OR_ADD',
    ]);
    expect(ok.headers_to_remove).toEqual(['x-tollgate-degraded']);
  });

  it("deny: tollgate's own reply, its headers overwrite", () => {
    const d = read(encodeCheckResponse(deny)).denied_response;
    expect(new Set(d.headers.map((h: any) => h.append_action))).toEqual(
      new Set(['OVERWRITE_IF_EXISTS_OR_ADD']),
    );
  });

  it('dynamic_metadata (allow and deny): decision, identity, models, tokens, cost, limit, reservation', () => {
    // Struct values as the official protos read them: { kind, stringValue | numberValue }
    const flat = (res: any) =>
      Object.fromEntries(
        Object.entries(res.dynamic_metadata.fields).map(([k, v]: [string, any]) => [
          k,
          v.stringValue ?? v.numberValue,
        ]),
      );
    const identity = {
      tenant: 'acme',
      team: 'search',
      user: undefined,
      key: 'key_0123456789abcdef0123456789abcdef',
    };
    const routed: Decision = {
      ...allow,
      reservation: 'mabc.0123456789abcdefghijkl',
      stats: {
        identity,
        model: 'gpt-4o',
        chosenModel: 'gpt-4o-mini',
        promptTokens: 12,
        reservedTokens: 4096,
        micros: 2460,
      },
    };
    const denied: Decision = {
      ...deny,
      stats: {
        identity: { tenant: 'a:b/c' },
        model: 'gpt-4o',
        promptTokens: 9,
        reservedTokens: 100,
        micros: 0,
        limit: 'tenant-tokens',
      },
    };
    for (const bytes of [
      encodeCheckResponse(routed),
      encode(official, 'envoy.service.auth.v3.CheckResponse', toCheckResponse(routed)),
    ])
      expect(flat(read(Buffer.from(bytes)))).toEqual({
        decision: 'reroute',
        reason: 'rerouted',
        tenant: 'acme',
        team: 'search',
        key: 'key_0123456789abcdef0123456789abcdef',
        model: 'gpt-4o',
        routed_model: 'gpt-4o-mini',
        prompt_tokens: 12,
        reserved_tokens: 4096,
        cost_micros: 2460,
        tollgate_reservation: 'mabc.0123456789abcdefghijkl',
      });
    const dm = flat(read(encodeCheckResponse(denied)));
    expect(dm.decision).toEqual('deny');
    expect(dm.limit).toEqual('tenant-tokens');
    expect(dm.tenant).toMatch(/^~[A-Za-z0-9_-]{27}$/); // keyed as tollgate keys it (safeId)
    expect(dm.cost_micros).toEqual(0);
    expect(dm.routed_model).toBeUndefined();
    const cached = read(encodeCheckResponse({ ...denied, stats: { ...denied.stats, cached: true } }));
    expect(flat(cached).decision).toBe('cache');
    const queued = read(encodeCheckResponse({ ...deny, reason: 'queued', httpStatus: 202, stats: {} }));
    expect(flat(queued)).toEqual({
      decision: 'queued',
      reason: 'queued',
    });
  });

  it('the lean encoder (direct and grpc-js paths, framed or not) and toCheckResponse agree under the official protos', () => {
    const { authorization } = loadGrpcPackages();
    for (const d of [allow, deny]) {
      const lean = encodeCheckResponse(d);
      const viaGrpcJs = Buffer.from(authorization.Check.responseSerialize(toCheckResponse(d)));
      const viaOfficial = Buffer.from(
        encode(official, 'envoy.service.auth.v3.CheckResponse', toCheckResponse(d)),
      );
      // the lean bytes leave out the empty status message proto-loader writes; same message otherwise
      const full = (b: Buffer) => resType().toObject(resType().decode(b), { ...CONVERSION, defaults: true });
      expect(full(lean)).toEqual(full(viaOfficial));
      expect(viaGrpcJs.equals(viaOfficial)).toBe(true);
      const framed = encodeCheckResponse(d, true);
      expect(framed.readUInt32BE(1)).toBe(lean.length);
      expect(framed.subarray(5).equals(lean)).toBe(true);
    }
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

describe('schema matches official type tree', () => {
  it('every vendored envoy.* / google.rpc.* type has identical fields and numbers', () => {
    const mine = collect(ours).filter((t) => /^\.(envoy|google\.rpc)\./.test(t.fullName));
    expect(mine.length).toBeGreaterThan(20);
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
        // Same names, same ids, same types, same repeated/map-ness: no upstream field omitted.
        expect(ourFields, t.fullName).toEqual(upFields);
        expect(t.oneofsArray.map((o) => o.name).sort(), t.fullName).toEqual(
          upType.oneofsArray.map((o) => o.name).sort(),
        );
      }
      checked.push(t.fullName);
    }
    for (const must of [
      '.envoy.service.auth.v3.CheckRequest',
      '.envoy.service.auth.v3.CheckResponse',
      '.envoy.service.auth.v3.DeniedHttpResponse',
      '.envoy.service.auth.v3.OkHttpResponse',
      '.envoy.service.auth.v3.AttributeContext.HttpRequest',
      '.envoy.config.core.v3.HeaderValueOption',
      '.envoy.config.core.v3.HeaderValueOption.HeaderAppendAction',
      '.envoy.config.core.v3.Metadata',
      '.envoy.config.core.v3.Address',
      '.envoy.type.v3.StatusCode',
      '.google.rpc.Status',
    ]) {
      expect(checked).toContain(must);
    }
  });

  it('Authorization service methods match upstream', () => {
    const mineSvc = ours.lookupService('envoy.service.auth.v3.Authorization');
    const upSvc = official.lookupService('envoy.service.auth.v3.Authorization');
    const shape = (s: protobuf.Service) =>
      s.methodsArray.map((m) => ({
        name: m.name,
        req: (m.resolve() as protobuf.Method).resolvedRequestType?.fullName,
        res: m.resolvedResponseType?.fullName,
        reqStream: !!m.requestStream,
        resStream: !!m.responseStream,
      }));
    expect(shape(mineSvc)).toEqual(shape(upSvc));
  });
});

describe('grpc.health.v1', () => {
  // No official copy of grpc/health/v1/health.proto ships in
  // @grpc/grpc-js-xds/deps (nor anywhere else in node_modules), so there is no
  // official root to round-trip against. Instead pin the canonical wire bytes
  // of the standard protocol (HealthCheckRequest.service = 1 (string),
  // HealthCheckResponse.status = 1 (enum, SERVING = 1, SERVICE_UNKNOWN = 3)).
  it('HealthCheckResponse / HealthCheckRequest encode to the canonical bytes', () => {
    const res = ours.lookupType('grpc.health.v1.HealthCheckResponse');
    expect(Buffer.from(res.encode(res.fromObject({ status: 'SERVING' })).finish())).toEqual(
      Buffer.from([0x08, 0x01]),
    );
    expect(res.toObject(res.decode(Buffer.from([0x08, 0x03])), CONVERSION)).toEqual({
      status: 'SERVICE_UNKNOWN',
    });
    expect(ours.lookupEnum('grpc.health.v1.HealthCheckResponse.ServingStatus').values).toEqual({
      UNKNOWN: 0,
      SERVING: 1,
      NOT_SERVING: 2,
      SERVICE_UNKNOWN: 3,
    });
    const req = ours.lookupType('grpc.health.v1.HealthCheckRequest');
    expect(Buffer.from(req.encode(req.fromObject({ service: 'ab' })).finish())).toEqual(
      Buffer.from([0x0a, 0x02, 0x61, 0x62]),
    );
    const { health } = loadGrpcPackages();
    expect(Buffer.from(health.Check.responseSerialize({ status: 'NOT_SERVING' }))).toEqual(
      Buffer.from([0x08, 0x02]),
    );
  });
});
