/**
 * The store's own Valkey connection (src/store/resp.ts), against a real valkey-server reached through
 * a small TCP relay that can (a) hand Valkey's replies over one byte per read, (b) hold them back,
 * as a hung or partitioned server would. What a user sees: the same answers as a direct connection,
 * and after a silence every waiting check fails (the breaker's signal) and the next ones are answered
 * correctly on a fresh connection, never with a late reply meant for an earlier command.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RespConnection } from '../src/store/resp.js';
import { type CheckPlan, EntryKind, Outcome } from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;

/** A relay to Valkey. `mode` applies to data coming back from Valkey. */
class Relay {
  mode: 'pass' | 'dribble' | 'hold' = 'pass';
  connections = 0;
  private server: Server;
  private held: { to: Socket; data: Buffer }[] = [];
  port = 0;
  constructor(private readonly target: number) {
    this.server = createServer((client) => {
      this.connections++;
      const up = connect(this.target, '127.0.0.1');
      client.on('data', (d) => up.write(d));
      up.on('data', (d: Buffer) => this.back(client, d));
      const end = () => {
        client.destroy();
        up.destroy();
      };
      client.on('close', end);
      up.on('close', end);
      client.on('error', () => {});
      up.on('error', () => {});
    });
  }
  private back(to: Socket, d: Buffer): void {
    if (this.mode === 'hold') this.held.push({ to, data: d });
    else if (this.mode === 'pass') to.write(d);
    else {
      // one byte per write, each in its own turn: the client sees many partial reads
      let i = 0;
      const step = () => {
        if (i >= d.length || to.destroyed) return;
        to.write(d.subarray(i, i + 1));
        i++;
        setImmediate(step);
      };
      step();
    }
  }
  /** Deliver what was held (to whichever connection it was meant for, if still open). */
  release(): void {
    this.mode = 'pass';
    for (const h of this.held.splice(0)) if (!h.to.destroyed) h.to.write(h.data);
  }
  listen(): Promise<void> {
    return new Promise((r) =>
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as { port: number }).port;
        r();
      }),
    );
  }
  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk.close();
});

const plan = (key: string, capacity: number, cost = 1): CheckPlan => ({
  keys: [key],
  candidates: [
    [
      {
        key: 0,
        kind: EntryKind.Rolling,
        capacity,
        period: 3_600_000,
        tzOffsetMin: 0,
        cost,
        shadow: false,
        downgradeAt: 0,
      },
    ],
  ],
});

/** A store connection to `port` with a short reply timeout and a fixed reconnect delay. */
const connTo = (port: number, replyTimeoutMs: number, retryMs: number) =>
  new RespConnection({
    host: '127.0.0.1',
    port,
    db: 0,
    name: 'tollgate-test',
    connectTimeoutMs: 2000,
    replyTimeoutMs,
    retryDelayMs: () => retryMs,
  });

describe('the store connection (RESP, pipelined)', () => {
  it('replies split into one-byte reads give the same answers as a direct connection', async () => {
    const relay = new Relay(vk.port);
    await relay.listen();
    relay.mode = 'dribble';
    const slow = new ValkeyStore({ url: `valkey://127.0.0.1:${relay.port}`, timeoutMs: 20_000 });
    const direct = new ValkeyStore({ url: vk.url, timeoutMs: 20_000 });
    try {
      await slow.connect();
      await direct.connect();
      const a = await Promise.all(
        Array.from({ length: 12 }, (_, i) => slow.check(plan(`dribble:a:${i % 3}`, 5))),
      );
      const b = await Promise.all(
        Array.from({ length: 12 }, (_, i) => direct.check(plan(`dribble:b:${i % 3}`, 5))),
      );
      const view = (r: (typeof a)[number]) => [
        r.outcome,
        r.candidates[0][0].status,
        r.candidates[0][0].remaining,
      ];
      expect(a.map(view)).toEqual(b.map(view));
      expect(a.filter((r) => r.outcome === Outcome.Allowed)).toHaveLength(12); // 4 per key, capacity 5
      // an error reply (unknown command) and a bulk string, dribbled too
      await expect(slow.conn.command(['NOSUCHCOMMAND'])).rejects.toThrow(/unknown command/i);
      expect(await slow.conn.command(['ECHO', 'héllo\r\nworld'])).toBe('héllo\r\nworld');
      expect(await slow.conn.command(['PING'])).toBe('PONG');
    } finally {
      await slow.close();
      await direct.close();
      await relay.close();
    }
  });

  it('a silent server: waiting commands fail after the reply timeout, the next ones get their own replies', async () => {
    const relay = new Relay(vk.port);
    await relay.listen();
    const conn = connTo(relay.port, 300, 20);
    try {
      await conn.connect();
      expect(await conn.command(['SET', 'silent:k', 'before'])).toBe('OK');
      relay.mode = 'hold';
      const t0 = Date.now();
      const waiting = [conn.command(['GET', 'silent:k']), conn.command(['INCR', 'silent:n'])];
      for (const w of waiting) await expect(w).rejects.toThrow(/timed out/);
      const waited = Date.now() - t0;
      expect(waited).toBeGreaterThanOrEqual(290);
      expect(waited).toBeLessThan(2000);
      // The held replies now arrive, but only on the old (closed) connection.
      relay.release();
      await conn.connect(); // reconnected
      expect(relay.connections).toBe(2);
      expect(await conn.command(['ECHO', 'fresh'])).toBe('fresh');
      expect(await conn.command(['GET', 'silent:k'])).toBe('before');
    } finally {
      conn.close();
      await relay.close();
    }
  });

  it('while disconnected a command fails at once (no offline queue), and it reconnects by itself', async () => {
    const relay = new Relay(vk.port);
    await relay.listen();
    const conn = connTo(relay.port, 1000, 50);
    try {
      await conn.connect();
      // drop the connection from the server side
      const killed = (await vk.client.client('KILL', 'SKIPME', 'yes', 'TYPE', 'normal')) as number;
      expect(killed).toBeGreaterThanOrEqual(1);
      await new Promise((r) => setTimeout(r, 10));
      const t0 = Date.now();
      await expect(conn.command(['PING'])).rejects.toThrow(/not connected/);
      expect(Date.now() - t0).toBeLessThan(50);
      await conn.connect();
      expect(await conn.command(['PING'])).toBe('PONG');
    } finally {
      conn.close();
      await relay.close();
    }
  });

  it('an ACL user that may not name its connection (no client|setname) still connects and checks', async () => {
    await vk.client.call(
      'ACL',
      'SETUSER',
      'plain-user',
      'on',
      '>plain-pw-1',
      '~*',
      '+@all',
      '-client|setname',
    );
    const store = new ValkeyStore({
      url: `valkey://plain-user:plain-pw-1@127.0.0.1:${vk.port}`,
      timeoutMs: 2000,
    });
    try {
      await store.connect();
      const r = await store.check(plan('acl:nosetname', 3));
      expect(r.outcome).toBe(Outcome.Allowed);
      await expect(store.conn.command(['CLIENT', 'SETNAME', 'x'])).rejects.toThrow(/NOPERM|permission/i);
    } finally {
      await store.close();
      await vk.client.call('ACL', 'DELUSER', 'plain-user');
    }
  });

  it('a wrong password is refused with the server\u2019s reason, and no password is logged in it', async () => {
    const conn = new RespConnection({
      host: '127.0.0.1',
      port: vk.port,
      db: 0,
      username: 'nobody',
      password: 'secret-pw-123',
      name: 'tollgate-test',
      connectTimeoutMs: 2000,
      replyTimeoutMs: 1000,
    });
    try {
      const err = await conn.connect().then(
        () => null,
        (e: Error) => e,
      );
      expect(err?.message).toMatch(/WRONGPASS|invalid username-password/i);
      expect(err?.message).not.toContain('secret-pw-123');
    } finally {
      conn.close();
    }
  });
});
