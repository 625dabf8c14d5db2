/**
 * Overload bound: server.max_concurrent_streams is advertised in HTTP/2 SETTINGS, so a client that
 * sends checks faster than they are decided cannot make tollgate buffer an unbounded number of
 * requests; the excess waits in the client and is still answered.
 */
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';

const { vk, serve } = valkeyApps();

/** A config whose server section gets `server` (YAML lines at two-space indent). */
const CONFIG = (server = '') => `
server:
  decision_deadline: 8s
${server}
store:
  timeout: 6s
limits:
  - { name: per-tenant, per: tenant, requests: 1000, every: 1h }
`;

/** The SETTINGS the server sends to a new HTTP/2 connection. */
async function serverSettings(port: number): Promise<http2.Settings> {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<http2.Settings>((resolve, reject) => {
      s.once('remoteSettings', resolve);
      s.once('error', reject);
    });
  } finally {
    s.close();
  }
}

async function advertisedStreams(port: number): Promise<number | undefined> {
  return (await serverSettings(port)).maxConcurrentStreams;
}

async function inflight(httpPort: number): Promise<number> {
  const r = await fetch(`http://127.0.0.1:${httpPort}/readyz`);
  return ((await r.json()) as { inflight: number }).inflight;
}

describe('server.max_concurrent_streams', () => {
  it('defaults to 128 streams per connection', async () => {
    const { app } = await serve(CONFIG());
    expect(await advertisedStreams(app.grpcPort)).toBe(128);
  });

  it('holds at most that many checks at once; the rest wait in the client and are all answered', async () => {
    const { app, client } = await serve(CONFIG('  max_concurrent_streams: 4'));
    const { default: Valkey } = await import('iovalkey');
    const busy = new Valkey(vk().url);
    try {
      // Valkey runs one long script (a counted loop: TIME is frozen in scripts), so every check
      // waits for the store while 20 are sent on one connection.
      const stall = busy.eval('local x = 0 for i = 1, 40000000 do x = x + i end return 1', 0);
      await new Promise((r) => setTimeout(r, 50));
      const calls = Array.from({ length: 20 }, (_, i) =>
        client.check({
          headers: { 'x-tenant-id': `overload-${Date.now()}-${i}` },
          body: chat('gpt-4o-mini', 'hello'),
        }),
      );
      await new Promise((r) => setTimeout(r, 200));
      const seen = await inflight(app.httpPort);
      await stall;
      const answers = await Promise.all(calls);
      expect(seen).toBe(4); // without the bound: 20
      expect(answers.every((a) => a.allowed && a.upstream['x-tollgate-degraded'] === undefined)).toBe(true);
      expect(answers.every((a) => a.headers['x-ratelimit-remaining-requests'] === '999')).toBe(true);
    } finally {
      busy.disconnect();
    }
    expect(await advertisedStreams(app.grpcPort)).toBe(4);
  });
});

describe('HTTP/2 flow-control windows', () => {
  /** Stream window from SETTINGS, and what this client may send on the connection after a PING round trip. */
  async function windows(port: number): Promise<{ stream?: number; connection: number }> {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        s.once('error', reject);
        s.once('remoteSettings', (st) => s.ping((err) => (err ? reject(err) : resolve(st))));
      });
      return { stream: settings.initialWindowSize, connection: s.state.remoteWindowSize ?? -1 };
    } finally {
      s.close();
    }
  }

  it("default: Node's 64 KiB windows", async () => {
    const { app } = await serve(CONFIG());
    expect(await windows(app.grpcPort)).toEqual({ stream: 65_535, connection: 65_535 });
  });

  it('server.http2_stream_window / http2_connection_window are what a client may send', async () => {
    const { app, client } = await serve(
      CONFIG('  http2_stream_window: 1048576\n  http2_connection_window: 4194304'),
    );
    expect(await windows(app.grpcPort)).toEqual({ stream: 1_048_576, connection: 4_194_304 });
    // and a check with a body larger than the default window goes through
    const a = await client.check({
      headers: { 'x-tenant-id': `win-${Date.now()}` },
      body: chat('gpt-4o-mini', 'word '.repeat(40_000)),
    });
    expect(a.allowed).toBe(true);
  });
});
