/** Envoy's OFFICIAL protos (from @grpc/grpc-js-xds, a devDependency), for building requests as Envoy does. */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const INCLUDES = ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) => join(XDS_DEPS, d));

let root: protobuf.Root | undefined;

export function officialRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (origin, target) => {
    for (const dir of INCLUDES) {
      const full = join(dir, target);
      try {
        accessSync(full, constants.R_OK);
        return full;
      } catch {}
    }
    return protobuf.util.path.resolve(origin, target);
  };
  r.loadSync(['envoy/service/auth/v3/external_auth.proto'], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

/** A google.protobuf.Struct from plain JSON (as Envoy's jwt_authn writes claims into metadata). */
export function toStruct(obj: Record<string, unknown>): unknown {
  const value = (v: unknown): unknown => {
    if (v === null) return { nullValue: 0 };
    if (typeof v === 'string') return { stringValue: v };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'boolean') return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: toStruct(v as Record<string, unknown>) };
  };
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, value(v)])) };
}

export interface OfficialCheck {
  path?: string;
  headers?: Record<string, string>;
  body?: unknown;
  /** attributes.source.address.socket_address.address (the downstream peer Envoy saw). */
  sourceAddress?: string;
}

/**
 * One real gRPC Check to tollgate with a CheckRequest encoded from Envoy's official protos, as Envoy
 * sends it (raw_body, headers map, optionally the source peer). Answers the decoded CheckResponse
 * plus `status` (the HTTP status the client would get) and the denied body as JSON.
 */
export async function officialCheck(
  port: number,
  o: OfficialCheck,
): Promise<{ allowed: boolean; status: number; json?: any; headers: Record<string, string>; raw: any }> {
  const grpc = await import('@grpc/grpc-js');
  const root = officialRoot();
  const CheckRequest = root.lookupType('envoy.service.auth.v3.CheckRequest');
  const CheckResponse = root.lookupType('envoy.service.auth.v3.CheckResponse');
  const body =
    o.body === undefined
      ? undefined
      : Buffer.from(typeof o.body === 'string' ? o.body : JSON.stringify(o.body));
  const attributes: Record<string, unknown> = {
    request: {
      http: {
        method: 'POST',
        path: o.path ?? '/v1/chat/completions',
        headers: {
          'content-type': 'application/json',
          ...(body ? { 'content-length': String(body.length) } : {}),
          ...(o.headers ?? {}),
        },
        ...(body ? { raw_body: body } : {}),
      },
    },
  };
  if (o.sourceAddress)
    attributes.source = { address: { socket_address: { address: o.sourceAddress, port_value: 40000 } } };
  const bytes = CheckRequest.encode(CheckRequest.fromObject({ attributes })).finish();
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  try {
    const res: any = await new Promise((resolve, reject) =>
      client.makeUnaryRequest(
        '/envoy.service.auth.v3.Authorization/Check',
        (b: Buffer) => b,
        (b: Buffer) => CheckResponse.toObject(CheckResponse.decode(b), { enums: String }),
        Buffer.from(bytes),
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    const allowed = !res.status?.code;
    const list = allowed ? res.ok_response?.response_headers_to_add : res.denied_response?.headers;
    const headers: Record<string, string> = {};
    for (const h of list ?? []) headers[h.header.key.toLowerCase()] = h.header.value;
    const codes: Record<string, number> = {
      TooManyRequests: 429,
      Unauthorized: 401,
      BadRequest: 400,
      Forbidden: 403,
      ServiceUnavailable: 503,
      Accepted: 202,
    };
    const st = res.denied_response?.status?.code;
    let json: any;
    try {
      json = res.denied_response?.body ? JSON.parse(res.denied_response.body) : undefined;
    } catch {}
    return { allowed, status: allowed ? 200 : (codes[st] ?? Number(st)), json, headers, raw: res };
  } finally {
    client.close();
  }
}
