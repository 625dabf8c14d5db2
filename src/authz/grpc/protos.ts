/**
 * Loading of the vendored protobuf definitions (proto/ at the repo root).
 *
 * proto/ holds self-contained copies of Envoy's ext_authz v3 protos and the
 * gRPC health protocol with all validate/udpa annotations stripped, so that
 * @grpc/proto-loader needs nothing but that one include directory. The
 * google/protobuf well-known types are bundled by protobufjs itself.
 */
import { existsSync } from 'node:fs';
import { dirname, join, parse } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

function findProtoDir(): string {
  const start = dirname(fileURLToPath(import.meta.url));
  let dir = start;
  const { root } = parse(dir);
  for (;;) {
    const candidate = join(dir, 'proto');
    if (existsSync(join(candidate, 'envoy'))) return candidate;
    if (dir === root) break;
    dir = dirname(dir);
  }
  throw new Error(`tollgate: cannot locate the proto/ directory (searched upwards from ${start})`);
}

/** Absolute path of the repo's vendored proto/ directory. */
export const PROTO_DIR: string = findProtoDir();

/** Proto files the server loads, relative to PROTO_DIR. */
export const AUTHZ_PROTO = 'envoy/service/auth/v3/external_auth.proto';
export const HEALTH_PROTO = 'grpc/health/v1/health.proto';

/**
 * Options for @grpc/proto-loader. Handlers see snake_case field names, int64
 * as JS numbers, enums as their string names, bytes as Buffers, no filled-in
 * defaults for absent scalar/message fields (but [] / {} for empty repeated and
 * map fields), and a virtual property naming the set member of each oneof.
 *
 * Caveat: google.protobuf.* well-known types come from protobufjs' bundled
 * definitions, whose field names are camelCase regardless of keepCase
 * (Struct values are `{ stringValue }`, `{ numberValue }`, ...; Any keeps
 * `type_url`).
 */
export const LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  bytes: Buffer,
  defaults: false,
  arrays: true,
  objects: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
} satisfies protoLoader.Options;

export interface GrpcPackages {
  /** envoy.service.auth.v3.Authorization service definition. */
  authorization: grpc.ServiceDefinition;
  /** grpc.health.v1.Health service definition. */
  health: grpc.ServiceDefinition;
  AuthorizationClient: grpc.ServiceClientConstructor;
  HealthClient: grpc.ServiceClientConstructor;
}

let cached: GrpcPackages | undefined;

function lookupService(root: grpc.GrpcObject, fqName: string): grpc.ServiceClientConstructor {
  let node: unknown = root;
  for (const part of fqName.split('.')) {
    node = (node as Record<string, unknown> | undefined)?.[part];
  }
  if (typeof node !== 'function' || !('service' in node)) {
    throw new Error(`tollgate: service ${fqName} not found in loaded protos`);
  }
  return node as grpc.ServiceClientConstructor;
}

/** Loads both service protos (once; later calls return the cached result). */
export function loadGrpcPackages(): GrpcPackages {
  if (cached) return cached;
  const definition = protoLoader.loadSync([AUTHZ_PROTO, HEALTH_PROTO], LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(definition);
  const AuthorizationClient = lookupService(root, 'envoy.service.auth.v3.Authorization');
  const HealthClient = lookupService(root, 'grpc.health.v1.Health');
  cached = {
    authorization: AuthorizationClient.service,
    health: HealthClient.service,
    AuthorizationClient,
    HealthClient,
  };
  return cached;
}
