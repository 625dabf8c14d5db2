/**
 * Loading of the vendored ext_proc protos (envoy.service.ext_proc.v3.ExternalProcessor) from proto/,
 * with the same include directory and conversion options as the ext_authz service (protos.ts), so
 * handlers see the same object shapes: snake_case fields, enums as names, bytes as Buffers, a virtual
 * property naming the set member of each oneof (`request: 'response_body'`, ...).
 *
 * Vendored version: the one shipped in @grpc/grpc-js-xds deps/envoy-api (wire-compatibility proven by
 * test/proto-compat-ext-proc.test.ts). It predates upstream's later additions (ProcessingRequest
 * protocol_config, StreamedBodyResponse, ...); fields a newer Envoy sends that this version lacks are
 * skipped by the decoder as unknown fields, which is harmless for an observer.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { LOADER_OPTIONS } from './protos.js';

/** Proto file of the ext_proc service, relative to PROTO_DIR. */
export const EXT_PROC_PROTO = 'envoy/service/ext_proc/v3/external_processor.proto';

/** Fully-qualified service name, and the gRPC method path Envoy calls. */
export const EXT_PROC_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';
export const EXT_PROC_PROCESS_PATH = '/envoy.service.ext_proc.v3.ExternalProcessor/Process';

export interface ExtProcPackages {
  /** envoy.service.ext_proc.v3.ExternalProcessor service definition (one method: Process, bidi stream). */
  externalProcessor: grpc.ServiceDefinition;
  ExternalProcessorClient: grpc.ServiceClientConstructor;
}

let cached: ExtProcPackages | undefined;

/** Loads the ext_proc service proto (once; later calls return the cached result). */
export function loadExtProcPackages(): ExtProcPackages {
  if (cached) return cached;
  const definition = protoLoader.loadSync([EXT_PROC_PROTO], LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(definition);
  let node: unknown = root;
  for (const part of EXT_PROC_SERVICE.split('.'))
    node = (node as Record<string, unknown> | undefined)?.[part];
  if (typeof node !== 'function' || !('service' in node)) {
    throw new Error(`tollgate: service ${EXT_PROC_SERVICE} not found in loaded protos`);
  }
  const ExternalProcessorClient = node as grpc.ServiceClientConstructor;
  cached = { externalProcessor: ExternalProcessorClient.service, ExternalProcessorClient };
  return cached;
}

// ---------------------------------------------------------------------------------------------
// Decoded shapes (as produced by LOADER_OPTIONS): only the fields the response phase reads/writes.
// ---------------------------------------------------------------------------------------------

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
