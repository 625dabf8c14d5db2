/**
 * A private valkey-server locked down the way production should run it: ACL users from an ACL file
 * (the default user only for the test's admin connection, with a password) and optionally TLS only
 * (plaintext port off), with certificates from a test CA.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Valkey } from 'iovalkey';
import type { TestCa, TestCert } from './certs.js';
import { baseServerArgs, freePort } from './valkey.js';

export interface SecureValkey {
  port: number;
  tls: boolean;
  /** Admin connection (default user, full rights). */
  admin: Valkey;
  /** A URL for tollgate: valkeys:// with TLS, else valkey://. */
  url(user: string, password: string): string;
  close(): Promise<void>;
}

export interface SecureValkeyOptions {
  adminPassword: string;
  /** Extra ACL file lines, e.g. `user tollgate on >pw ~tollgate:* -@all +evalsha`. */
  users: string[];
  tls?: { ca: TestCa; server: TestCert };
}

export async function startSecureValkey(o: SecureValkeyOptions): Promise<SecureValkey> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-valkey-secure-'));
  const aclfile = join(dir, 'users.acl');
  writeFileSync(aclfile, [`user default on >${o.adminPassword} ~* &* +@all`, ...o.users, ''].join('\n'));
  const args = [...baseServerArgs(dir), '--aclfile', aclfile];
  if (o.tls) {
    args.push(
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cert-file',
      o.tls.server.cert,
      '--tls-key-file',
      o.tls.server.key,
      '--tls-ca-cert-file',
      o.tls.ca.cert,
      '--tls-auth-clients',
      'no',
    );
  } else args.push('--port', String(port));
  const proc: ChildProcess = spawn('valkey-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (c) => {
    out += c;
  });
  proc.stderr!.on('data', (c) => {
    out += c;
  });
  const adminOpts = {
    host: '127.0.0.1',
    port,
    password: o.adminPassword,
    tls: o.tls ? { ca: readFileSync(o.tls.ca.cert), servername: 'localhost' } : undefined,
    maxRetriesPerRequest: 1,
    lazyConnect: true,
  };
  const deadline = Date.now() + 10_000;
  let admin: Valkey | undefined;
  while (!admin) {
    if (proc.exitCode !== null) throw new Error(`valkey-server exited (${proc.exitCode}):\n${out}`);
    const c = new Valkey({ ...adminOpts, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      await c.connect();
      await c.ping();
      admin = c;
    } catch {
      c.disconnect();
      if (Date.now() > deadline) throw new Error(`valkey-server did not answer on ${port}:\n${out}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  return {
    port,
    tls: !!o.tls,
    admin,
    url: (user, password) =>
      `${o.tls ? 'valkeys' : 'valkey'}://${encodeURIComponent(user)}:${encodeURIComponent(password)}@localhost:${port}`,
    async close() {
      admin.disconnect();
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
