/**
 * Translation between Envoy's CheckRequest/CheckResponse (proto-loader objects) and tollgate's
 * CheckInput/Decision. No policy lives here.
 */
import { eachMetadataField } from '../../decision/metadata.js';
import type { CheckInput, Decision, Headers } from '../../decision/types.js';

/** google.rpc.Code values we answer with. */
export const RpcCode = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNAVAILABLE: 14,
} as const;

/** protobuf Struct (protobufjs' bundled well-known type: camelCase value fields) → plain JSON. */
export function structToJson(s: unknown, depth = 0): unknown {
  if (!s || typeof s !== 'object' || depth > 32) return undefined;
  const fields = (s as { fields?: Record<string, unknown> }).fields ?? {};
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) out[k] = valueToJson(v, depth + 1);
  return out;
}

function valueToJson(v: unknown, depth: number): unknown {
  if (!v || typeof v !== 'object' || depth > 32) return undefined;
  const o = v as Record<string, unknown>;
  if ('stringValue' in o) return o.stringValue;
  if ('numberValue' in o) return o.numberValue;
  if ('boolValue' in o) return o.boolValue;
  if ('structValue' in o) return structToJson(o.structValue, depth + 1);
  if ('listValue' in o) {
    const values = (o.listValue as { values?: unknown[] } | undefined)?.values ?? [];
    return values.map((x) => valueToJson(x, depth + 1));
  }
  return null;
}

/** Envoy's CheckRequest → CheckInput. Envoy sends `raw_body` with pack_as_bytes, else `body`. */
export function toCheckInput(req: any): CheckInput {
  const http = req?.attributes?.request?.http ?? {};
  let headers: Record<string, string> = {};
  if (http.headers && Object.keys(http.headers).length > 0) {
    headers = {};
    for (const [k, v] of Object.entries(http.headers as Record<string, string>))
      headers[k.toLowerCase()] = String(v);
  } else if (http.header_map?.headers) {
    // encode_raw_headers: values may arrive as raw bytes
    for (const h of http.header_map.headers as { key: string; value?: string; raw_value?: Buffer }[]) {
      headers[h.key.toLowerCase()] = h.value || (h.raw_value ? h.raw_value.toString('utf8') : '');
    }
  }
  const raw: Buffer | undefined = http.raw_body;
  const body =
    raw && raw.length > 0
      ? raw
      : typeof http.body === 'string' && http.body.length > 0
        ? http.body
        : undefined;
  let metadata: Record<string, unknown> | undefined;
  const fm = req?.attributes?.metadata_context?.filter_metadata;
  if (fm && Object.keys(fm).length > 0) {
    metadata = {};
    for (const [ns, s] of Object.entries(fm)) metadata[ns] = structToJson(s);
  }
  const input: CheckInput = {
    method: String(http.method ?? headers[':method'] ?? ''),
    path: String(http.path ?? headers[':path'] ?? ''),
    headers,
    body,
    metadata,
  };
  const source = req?.attributes?.source?.address?.socket_address?.address;
  if (typeof source === 'string' && source) input.sourceAddress = source;
  return input;
}

// Envoy reads HeaderValueOption defaults differently across versions, and the default for
// response_headers_to_add appends (duplicating headers); so every header we send states its
// append_action explicitly (envoy/config/core/v3/base.proto, HeaderAppendAction):
// OVERWRITE_IF_EXISTS_OR_ADD for upstream request headers and deny headers, ADD_IF_ABSENT for the
// headers ext_authz adds to the provider's response on an allow (the provider's own x-ratelimit-*,
// on its 429s and 5xx too, must not be overwritten). Envoy honours append_action on
// response_headers_to_add since v1.31 (changelogs/1.31.0.yaml, ext_authz "Handle append_action");
// older Envoys treat an unset `append` as overwrite. docs/envoy-and-istio.md, "Response headers".
const opts = (h: Headers, append_action = 'OVERWRITE_IF_EXISTS_OR_ADD') =>
  Object.entries(h).map(([key, value]) => ({ header: { key, value }, append_action }));

/** google.rpc.Code of a deny with HTTP status `status`. */
export const rpcFor = (status: number): number =>
  status === 429
    ? RpcCode.RESOURCE_EXHAUSTED
    : status === 400
      ? RpcCode.INVALID_ARGUMENT
      : status === 503
        ? RpcCode.UNAVAILABLE
        : RpcCode.PERMISSION_DENIED;

/**
 * The Decision's dynamic metadata as a protobuf Struct (decision/metadata.ts): Envoy keeps it under
 * envoy.filters.http.ext_authz (access logs, later filters, ext_proc: src/settle/).
 */
export function metadataStruct(d: Decision): { fields: Record<string, unknown> } {
  const fields: Record<string, unknown> = {};
  eachMetadataField(d, {
    str(k, v) {
      fields[k] = { stringValue: v };
    },
    num(k, v) {
      fields[k] = { numberValue: v };
    },
  });
  return { fields };
}

/**
 * Decision → CheckResponse. Envoy allows when `status` is absent or code 0 (ext_authz grpc_client_impl.cc
 * maps any other code to Denied), so a deny always carries a non-zero code plus denied_response.
 */
export function toCheckResponse(d: Decision): any {
  if (d.kind === 'allow') {
    return {
      status: { code: RpcCode.OK, message: '' },
      ok_response: {
        headers: opts(d.upstreamHeaders),
        headers_to_remove: d.removeHeaders,
        response_headers_to_add: opts(d.responseHeaders, 'ADD_IF_ABSENT'),
      },
      dynamic_metadata: metadataStruct(d),
    };
  }
  return {
    status: { code: rpcFor(d.httpStatus), message: d.reason },
    denied_response: {
      status: { code: d.httpStatus },
      headers: opts(d.headers),
      body: d.body,
    },
    dynamic_metadata: metadataStruct(d),
  };
}
