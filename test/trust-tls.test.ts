/**
 * Transport security: Valkey with a least-privilege ACL user over TLS (valkeys://, CA from
 * VALKEY_CA_FILE) against a real TLS valkey-server; the gRPC server with TLS and with required client
 * certificates (mTLS), against real TLS clients. Certificates come from a CA made on the fly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grpcServerCredentials, grpcTlsFromEnv } from '../src/authz/grpc/tls.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { makeCa, makeCert, type TestCa, type TestCert } from './helpers/certs.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate } from './helpers/proc.js';
import { TlsEnvoyClient } from './helpers/tls-client.js';
import { type SecureValkey, startSecureValkey } from './helpers/valkey-secure.js';

// Generous store timeouts: these tests are about who may connect, not latency (a cold TLS connection
// on a busy CI machine can exceed the default 25 ms).
const LIMITS = `
limits:
  - { name: req, per: tenant, requests: 5, every: 1h }
server: { decision_deadline: 2s }
store: { timeout: 1s }
`;
/** Exactly what tollgate runs: connect (AUTH, CLIENT SETNAME, INFO ready check), load and run the script. */
const TOLLGATE_ACL =
  'resetkeys ~tollgate:* resetchannels -@all +evalsha +script|load +ping +info +client|setname +time +hmget +hset +hdel +pexpire +pttl +zadd +zrem +zrange +zcard +zremrangebyscore +xlen +xadd';

let ca: TestCa;
let rogue: TestCa;
let server: TestCert;
let client: TestCert;
let rogueClient: TestCert;
beforeAll(() => {
  ca = makeCa('tollgate-test-ca');
  rogue = makeCa('rogue-ca');
  server = makeCert(ca, 'server');
  client = makeCert(ca, 'envoy');
  rogueClient = makeCert(rogue, 'mallory');
});

describe('Valkey: ACL user over TLS', () => {
  const PW = 'tollgate-pw-Xy7!';
  let vk: SecureValkey;
  beforeAll(async () => {
    vk = await startSecureValkey({
      adminPassword: 'admin-pw',
      users: [`user tollgate on >${PW} ${TOLLGATE_ACL}`],
      tls: { ca, server },
    });
  });
  afterAll(async () => {
    await vk?.close();
  });

  it('the CLI connects with valkeys:// + VALKEY_CA_FILE as a least-privilege user and enforces', async () => {
    const p = await spawnTollgate({
      yaml: LIMITS,
      env: { VALKEY_URL: vk.url('tollgate', PW), VALKEY_CA_FILE: ca.cert, LOG_LEVEL: 'debug' },
    });
    const envoy = new EnvoyClient(p.grpcPort);
    try {
      const answers = [];
      for (let i = 0; i < 6; i++)
        answers.push(
          await envoy.check({ headers: { 'x-tenant-id': 'tls' }, body: chat('gpt-4o-mini', 'hi') }),
        );
      expect(answers.map((a) => a.allowed)).toEqual([true, true, true, true, true, false]);
      expect(answers.some((a) => a.headers['x-tollgate-degraded'])).toBe(false);
      expect(limitKeys(await vk.admin.keys('*'))).toEqual(['tollgate:r:req:tls']);
      // the server refused nothing tollgate asked for ...
      expect(await vk.admin.call('ACL', 'LOG')).toEqual([]);
      expect(p.output()).not.toMatch(/NOPERM|Skipping the ready check/);
      // ... and the user can do nothing else
      const dry = (...cmd: string[]) => vk.admin.call('ACL', 'DRYRUN', 'tollgate', ...cmd);
      expect(await dry('EVALSHA', 'x', '1', 'tollgate:r:req:x')).toBe('OK');
      for (const cmd of [
        ['FLUSHALL'],
        ['KEYS', '*'],
        ['CONFIG', 'GET', '*'],
        ['HSET', 'other:key', 'v', '1'],
        ['GET', 'tollgate:r:req:tls'],
        ['EVAL', 'return 1', '0'],
        ['SCRIPT', 'FLUSH'],
        ['DEBUG', 'SLEEP', '0'],
        ['SHUTDOWN'],
      ])
        expect(String(await dry(...cmd))).toMatch(/no permissions|not allowed|has no permissions/i);
      expect(p.output()).not.toContain(PW);
    } finally {
      envoy.close();
      await p.stop('SIGKILL');
    }
  });

  it('without the CA (or with the wrong password) it does not connect, and serves per policy', async () => {
    for (const [url, caFile] of [
      [vk.url('tollgate', PW), undefined],
      [vk.url('tollgate', PW), rogue.cert],
      [vk.url('tollgate', 'wrong-password'), ca.cert],
      [vk.url('tollgate', PW).replace('valkeys://', 'valkey://'), undefined], // plaintext to a TLS port
    ] as const) {
      const app: TestApp = await startTestApp(LIMITS, { valkeyUrl: url, valkeyCaFile: caFile });
      const envoy = new EnvoyClient(app.grpcPort);
      try {
        const a = await envoy.check({ headers: { 'x-tenant-id': 'x' }, body: chat('gpt-4o-mini', 'hi') });
        expect(a.allowed).toBe(true); // on_store_failure: allow
        expect(a.upstream['x-tollgate-degraded']).toBe('store-unavailable');
        const logs = app.logs.join('');
        expect(logs).toMatch(/Valkey not reachable at start/);
        expect(logs).not.toContain(PW);
        expect(logs).not.toContain('wrong-password');
      } finally {
        envoy.close();
        await app.close(500);
      }
    }
    expect(limitKeys(await vk.admin.keys('*'))).toEqual(['tollgate:r:req:tls']);
  }, 30_000);
});

describe('gRPC server TLS and mTLS', () => {
  const ok = async (c: EnvoyClient) => {
    const a = await c.check({ headers: { 'x-tenant-id': 'grpc-tls' }, body: chat('gpt-4o-mini', 'hi') });
    return a.allowed;
  };
  const refused = async (c: EnvoyClient) => {
    await expect(c.checkRaw({ attributes: {} }, 3000)).rejects.toThrow(
      /UNAVAILABLE|handshake|certificate|14/i,
    );
  };

  it('TLS: a client trusting the CA is served; plaintext and clients trusting another CA are refused', async () => {
    const app = await startTestApp(LIMITS, { tls: { cert: server.cert, key: server.key } });
    const good = new TlsEnvoyClient(app.grpcPort, { ca: ca.cert });
    const plain = new EnvoyClient(app.grpcPort);
    const wrongCa = new TlsEnvoyClient(app.grpcPort, { ca: rogue.cert });
    try {
      expect(await ok(good)).toBe(true);
      await refused(plain);
      await refused(wrongCa);
    } finally {
      for (const c of [good, plain, wrongCa]) c.close();
      await app.close(500);
    }
  });

  it('mTLS (real CLI, TOLLGATE_TLS_* env): only clients with a certificate from the client CA are served', async () => {
    const p = await spawnTollgate({
      yaml: LIMITS,
      env: { TOLLGATE_TLS_CERT: server.cert, TOLLGATE_TLS_KEY: server.key, TOLLGATE_TLS_CLIENT_CA: ca.cert },
    });
    const clients = {
      good: new TlsEnvoyClient(p.grpcPort, { ca: ca.cert, cert: client.cert, key: client.key }),
      noCert: new TlsEnvoyClient(p.grpcPort, { ca: ca.cert }),
      rogueCert: new TlsEnvoyClient(p.grpcPort, {
        ca: ca.cert,
        cert: rogueClient.cert,
        key: rogueClient.key,
      }),
      plain: new EnvoyClient(p.grpcPort),
    };
    try {
      expect(await ok(clients.good)).toBe(true);
      await refused(clients.noCert);
      await refused(clients.rogueCert);
      await refused(clients.plain);
      // the process is unharmed by the failed handshakes
      expect(await ok(clients.good)).toBe(true);
      expect(p.proc.exitCode).toBeNull();
    } finally {
      for (const c of Object.values(clients)) c.close();
      await p.stop('SIGKILL');
    }
  });

  it('a half-configured or unreadable TLS setting is a start-up error (never a silent fallback to plaintext)', async () => {
    const cases = [
      [{ TOLLGATE_TLS_CERT: server.cert }, /TOLLGATE_TLS_KEY: required/],
      [{ TOLLGATE_TLS_KEY: server.key }, /TOLLGATE_TLS_CERT: required/],
      [
        { TOLLGATE_TLS_CERT: server.cert, TOLLGATE_TLS_KEY: '/nonexistent.key' },
        /TOLLGATE_TLS_KEY: cannot read/,
      ],
      [{ TOLLGATE_TLS_CLIENT_CA: ca.cert }, /TOLLGATE_TLS_CLIENT_CA: client certificates need server TLS/],
      [{ TOLLGATE_TLS_CERT: server.cert, TOLLGATE_TLS_KEY: ca.dir }, /TOLLGATE_TLS_KEY: cannot read/],
      [
        { TOLLGATE_TLS_CERT: server.cert, TOLLGATE_TLS_KEY: server.cert.replace(/\.pem$/, '.ext') },
        /not a PEM file/,
      ],
    ] as const;
    for (const [env, message] of cases)
      expect(() => grpcServerCredentials(grpcTlsFromEnv(env))).toThrow(message);
    expect(grpcTlsFromEnv({})).toBeUndefined();
    // and the real CLI refuses to start (exit 1) with the message
    const err = await spawnTollgate({ yaml: LIMITS, env: cases[0][0], readyTimeoutMs: 30_000 }).then(
      async (p) => {
        await p.stop('SIGKILL');
        return undefined;
      },
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/exited during start-up \(1\)/);
    expect(err?.message).toMatch(cases[0][1]);
  }, 40_000);
});

/** Limit keys (each allowed check also leaves a reservation record, tollgate:v:<id>, until settled). */
function limitKeys(keys: string[]): string[] {
  return keys.filter((k) => !k.startsWith('tollgate:v:'));
}
