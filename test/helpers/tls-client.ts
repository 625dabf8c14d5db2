/** An Envoy-like ext_authz client over TLS (optionally presenting a client certificate). */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { loadGrpcPackages } from '../../src/authz/grpc/protos.js';
import { EnvoyClient } from './envoy.js';

export interface TlsClientOptions {
  /** CA file the client trusts; omitted = the system roots (which do not know a test CA). */
  ca?: string;
  cert?: string;
  key?: string;
  /** Name to verify in the server certificate. */
  servername?: string;
}

export class TlsEnvoyClient extends EnvoyClient {
  constructor(port: number, o: TlsClientOptions) {
    super(port);
    this.client.close();
    const { AuthorizationClient } = loadGrpcPackages();
    const creds = grpc.credentials.createSsl(
      o.ca ? readFileSync(o.ca) : null,
      o.key ? readFileSync(o.key) : null,
      o.cert ? readFileSync(o.cert) : null,
    );
    (this as { client: any }).client = new AuthorizationClient(`localhost:${port}`, creds, {
      'grpc.ssl_target_name_override': o.servername ?? 'localhost',
    });
  }
}
