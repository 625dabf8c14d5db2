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
 *
 * The decoded message shapes and their helpers are protocol-free: src/settle/messages.ts.
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
