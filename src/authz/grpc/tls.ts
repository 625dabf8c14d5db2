/**
 * gRPC server transport security from the environment, for meshes without Istio:
 *
 *   TOLLGATE_TLS_CERT       PEM certificate chain of the server      } both or neither
 *   TOLLGATE_TLS_KEY        PEM private key of the server            }
 *   TOLLGATE_TLS_CLIENT_CA  PEM CA bundle: when set, every client must present a certificate signed by it (mTLS)
 *
 * Neither cert nor key → plaintext (the default: a sidecar on localhost, or Istio doing mTLS). Any
 * half-configured or unreadable setting is a start-up error, never a silent fallback to plaintext.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../errors.js';
import { readSettings, settings } from '../../settings.js';

export interface GrpcTlsFiles {
  cert: string;
  key: string;
  /** Require and verify client certificates against this CA bundle. */
  clientCa?: string;
}

/** What the environment asks for: undefined = plaintext. Throws ConfigError on a half-set pair. */
export function grpcTlsFromEnv(env?: Record<string, string | undefined>): GrpcTlsFiles | undefined {
  const s = env ? readSettings(env) : settings();
  const cert = s.tlsCert;
  const key = s.tlsKey;
  const clientCa = s.tlsClientCa;
  if (!cert && !key) {
    if (clientCa)
      throw new ConfigError([
        'TOLLGATE_TLS_CLIENT_CA: client certificates need server TLS; set TOLLGATE_TLS_CERT and TOLLGATE_TLS_KEY too',
      ]);
    return undefined;
  }
  if (!cert || !key)
    throw new ConfigError([
      `${cert ? 'TOLLGATE_TLS_KEY' : 'TOLLGATE_TLS_CERT'}: required when ${cert ? 'TOLLGATE_TLS_CERT' : 'TOLLGATE_TLS_KEY'} is set`,
    ]);
  return { cert, key, clientCa };
}

function readPem(envName: string, file: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new ConfigError([
      `${envName}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
    ]);
  }
  if (!pem.includes('-----BEGIN ')) throw new ConfigError([`${envName}: ${file} is not a PEM file`]);
  return pem;
}

/** grpc.ServerCredentials for the files (TLS, or mTLS with clientCa), or plaintext when undefined. */
export function grpcServerCredentials(files: GrpcTlsFiles | undefined): grpc.ServerCredentials {
  if (!files) return grpc.ServerCredentials.createInsecure();
  const cert = readPem('TOLLGATE_TLS_CERT', files.cert);
  const key = readPem('TOLLGATE_TLS_KEY', files.key);
  const ca = files.clientCa ? readPem('TOLLGATE_TLS_CLIENT_CA', files.clientCa) : null;
  return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
}

/** Server credentials as the environment configures them (see the module comment). */
export function serverCredentialsFromEnv(env?: Record<string, string | undefined>): grpc.ServerCredentials {
  return grpcServerCredentials(grpcTlsFromEnv(env));
}
