/**
 * The ext_proc messages as the response phase reads and writes them (envoy.service.ext_proc.v3, decoded
 * by the proto loader options of src/authz/grpc/protos.ts: snake_case fields, enums as names, bytes as
 * Buffers, a virtual property naming the set member of each oneof), and the helpers that read them.
 * Plain data: no gRPC here (src/authz/grpc/ext-proc-protos.ts loads the protos and serves them).
 */

export interface ExtProcHeaderValue {
  key: string;
  value?: string;
  /** Set instead of `value` when Envoy's envoy_reloadable_features_send_header_raw_value is on. */
  raw_value?: Buffer;
}

export interface ExtProcHttpHeaders {
  headers?: { headers?: ExtProcHeaderValue[] };
  end_of_stream?: boolean;
}

export interface ExtProcHttpBody {
  body?: Buffer;
  end_of_stream?: boolean;
}

/** google.protobuf.Struct as decoded by protobufjs (camelCase value kinds, see protos.ts). */
export interface DecodedStruct {
  fields?: Record<string, DecodedValue>;
}
export interface DecodedValue {
  stringValue?: string;
  numberValue?: number;
  boolValue?: boolean;
  structValue?: DecodedStruct;
  listValue?: { values?: DecodedValue[] };
  nullValue?: string;
  kind?: string;
}

export interface ExtProcProcessingRequest {
  request?:
    | 'request_headers'
    | 'response_headers'
    | 'request_body'
    | 'response_body'
    | 'request_trailers'
    | 'response_trailers';
  request_headers?: ExtProcHttpHeaders;
  response_headers?: ExtProcHttpHeaders;
  request_body?: ExtProcHttpBody;
  response_body?: ExtProcHttpBody;
  request_trailers?: { trailers?: { headers?: ExtProcHeaderValue[] } };
  response_trailers?: { trailers?: { headers?: ExtProcHeaderValue[] } };
  metadata_context?: { filter_metadata?: Record<string, DecodedStruct> };
  attributes?: Record<string, DecodedStruct>;
  observability_mode?: boolean;
}

/** The value of header `name` (lower-case) in an ext_proc header map: `value`, else `raw_value` as UTF-8. */
export function extProcHeader(h: ExtProcHttpHeaders | undefined, name: string): string | undefined {
  for (const hv of h?.headers?.headers ?? []) {
    if (hv.key !== name) continue;
    if (typeof hv.value === 'string' && hv.value.length > 0) return hv.value;
    if (hv.raw_value) return Buffer.from(hv.raw_value).toString('utf8');
    return hv.value ?? '';
  }
  return undefined;
}

/**
 * A string field of forwarded untyped metadata: `metadata_context.filter_metadata[namespace].fields[key]`
 * (e.g. namespace `envoy.filters.http.ext_authz`, key the reservation-id field the Check sets).
 */
export function forwardedMetadataString(
  req: ExtProcProcessingRequest,
  namespace: string,
  key: string,
): string | undefined {
  const v = req.metadata_context?.filter_metadata?.[namespace]?.fields?.[key];
  return typeof v?.stringValue === 'string' ? v.stringValue : undefined;
}

/**
 * The empty "continue, no mutation" answer to a message (needed when observability_mode is false:
 * every message gets exactly one ProcessingResponse of the matching kind).
 */
export function continueResponse(
  kind: NonNullable<ExtProcProcessingRequest['request']>,
): Record<string, unknown> {
  switch (kind) {
    case 'request_headers':
    case 'response_headers':
    case 'request_body':
    case 'response_body':
      return { [kind]: { response: {} } };
    case 'request_trailers':
    case 'response_trailers':
      return { [kind]: {} };
  }
}
