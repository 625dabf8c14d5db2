/**
 * Every environment variable tollgate reads, in one place, read once (envoyproxy/ratelimit's
 * settings.go is the model). The config file says what to enforce; the environment says where this
 * process runs: ports, the store's address, secrets, TLS files, log level. Nothing else in src/ reads
 * process.env (test/architecture.test.ts holds it to that).
 *
 * | Variable                        | Default              | Meaning                                         |
 * |---------------------------------|----------------------|-------------------------------------------------|
 * | TOLLGATE_CONFIG                 | ./tollgate.yaml      | Config file (YAML)                              |
 * | TOLLGATE_GRPC_PORT              | server.grpc_port     | gRPC port (ext_authz + health)                  |
 * | TOLLGATE_HTTP_PORT              | server.http_port     | metrics and probes port                         |
 * | TOLLGATE_HTTP_AUTHZ_PORT        | unset: off           | HTTP authorization mode's port (turns it on)    |
 * | TOLLGATE_ADMIN_PORT             | unset: server.admin  | admin API's port (turns it on; src/admin/)      |
 * | TOLLGATE_ADMIN_TOKEN            | unset                | bearer token every admin call needs             |
 * | VALKEY_URL                      | unset: memory store  | valkey[s]://user:pass@host:port/db; cluster: h1:p1,h2:p2 |
 * | VALKEY_CA_FILE                  | unset                | PEM CA bundle for TLS to Valkey                 |
 * | VALKEY_SENTINELS                | unset                | store.topology: sentinel: host:port,host:port   |
 * | VALKEY_SENTINEL_NAME            | unset                | the primary's name in the sentinels             |
 * | VALKEY_SENTINEL_PASSWORD        | unset                | the sentinels' own password (requirepass)       |
 * | TOLLGATE_API_KEY_SECRET         | unset: plain SHA-256 | HMAC secret for API-key hashing                 |
 * | LOG_LEVEL                       | info                 | pino level                                      |
 * | TOLLGATE_SHUTDOWN_GRACE_MS      | 10000                | SIGTERM drain bound                             |
 * | TOLLGATE_TLS_CERT / _KEY        | unset: plaintext     | gRPC server TLS                                 |
 * | TOLLGATE_TLS_CLIENT_CA          | unset                | require client certificates (mTLS)              |
 * | TOLLGATE_METRICS_TENANT_LABEL   | false                | per-tenant (hashed) counter                     |
 * | TOLLGATE_TOKENIZER              | fast                 | `tiktoken` forces the reference tokenizer       |
 * `identity.api_key_secret_env` in the config may name another variable for the secret (envValue).
 */
import { ConfigError } from './errors.js';

export interface Settings {
  configFile: string;
  grpcPort?: number;
  httpPort?: number;
  httpAuthzPort?: number;
  adminPort?: number;
  /** The admin API's bearer token ('' = unset: an admin listener refuses to start). */
  adminToken: string;
  valkeyUrl?: string;
  valkeyCaFile?: string;
  /** VALKEY_SENTINELS + VALKEY_SENTINEL_NAME (+ VALKEY_SENTINEL_PASSWORD), for store.topology: sentinel. */
  valkeySentinel?: { sentinels: { host: string; port: number }[]; name: string; password?: string };
  apiKeySecret: string;
  logLevel: string;
  shutdownGraceMs: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  metricsTenantLabel: boolean;
  tokenizer: 'fast' | 'tiktoken';
}

type Env = Record<string, string | undefined>;

const set = (env: Env, name: string): string | undefined => (env[name] === '' ? undefined : env[name]);

function port(env: Env, name: string): number | undefined {
  const v = set(env, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new ConfigError([`${name}: expected a port number, got "${v}"`]);
  return n;
}

function integer(env: Env, name: string, fallback: number): number {
  const v = set(env, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError([`${name}: expected a whole number, got "${v}"`]);
  return n;
}

/** VALKEY_SENTINELS="h1:26379,h2:26379" (port defaults to 26379) and VALKEY_SENTINEL_NAME. */
function sentinel(env: Env): Settings['valkeySentinel'] {
  const list = set(env, 'VALKEY_SENTINELS');
  const name = set(env, 'VALKEY_SENTINEL_NAME');
  if (list === undefined && name === undefined) return undefined;
  if (list === undefined || name === undefined)
    throw new ConfigError(['VALKEY_SENTINELS and VALKEY_SENTINEL_NAME: set both or neither']);
  const sentinels = list.split(',').map((a) => {
    const m = /^\s*(\[[^\]]+\]|[^:\s]+)(?::(\d{1,5}))?\s*$/.exec(a);
    if (!m) throw new ConfigError([`VALKEY_SENTINELS: expected host:port[,host:port…], got "${list}"`]);
    return { host: m[1].replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : 26379 };
  });
  return { sentinels, name, password: set(env, 'VALKEY_SENTINEL_PASSWORD') };
}

/** The settings an environment gives (tests pass their own; the process uses `settings()`). */
export function readSettings(env: Env = process.env): Settings {
  return {
    configFile: set(env, 'TOLLGATE_CONFIG') ?? './tollgate.yaml',
    grpcPort: port(env, 'TOLLGATE_GRPC_PORT'),
    httpPort: port(env, 'TOLLGATE_HTTP_PORT'),
    httpAuthzPort: port(env, 'TOLLGATE_HTTP_AUTHZ_PORT'),
    adminPort: port(env, 'TOLLGATE_ADMIN_PORT'),
    adminToken: env.TOLLGATE_ADMIN_TOKEN ?? '',
    valkeyUrl: set(env, 'VALKEY_URL'),
    valkeyCaFile: set(env, 'VALKEY_CA_FILE'),
    valkeySentinel: sentinel(env),
    apiKeySecret: env.TOLLGATE_API_KEY_SECRET ?? '',
    logLevel: set(env, 'LOG_LEVEL') ?? 'info',
    shutdownGraceMs: integer(env, 'TOLLGATE_SHUTDOWN_GRACE_MS', 10_000),
    tlsCert: set(env, 'TOLLGATE_TLS_CERT'),
    tlsKey: set(env, 'TOLLGATE_TLS_KEY'),
    tlsClientCa: set(env, 'TOLLGATE_TLS_CLIENT_CA'),
    metricsTenantLabel: env.TOLLGATE_METRICS_TENANT_LABEL === 'true',
    tokenizer: env.TOLLGATE_TOKENIZER === 'tiktoken' ? 'tiktoken' : 'fast',
  };
}

let current: Settings | undefined;

/** This process's settings, read from its environment on first use. */
export function settings(): Settings {
  current ??= readSettings();
  return current;
}

/** A variable the config names (identity.api_key_secret_env); '' when unset. */
export function envValue(name: string, env: Env = process.env): string {
  return env[name] ?? '';
}
