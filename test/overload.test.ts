/**
 * Overload bound: server.max_concurrent_streams is advertised in HTTP/2 SETTINGS, so a client that
 * sends checks faster than they are decided cannot make tollgate buffer an unbounded number of
 * requests; the excess waits in the client and is still answered.
 */
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { CONNECTION_WINDOW, STREAM_WINDOW } from '../src/grpc/flow-control.js';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';

const { vk, serve } = valkeyApps();

const CONFIG = (streams?: number) => `
server:
  decision_deadline: 8s
  ${streams === undefined ? '' : `max_concurrent_streams: ${streams}`}
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
    const { app, client } = await serve(CONFIG(4));
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
  it('a client may send a whole 1 MiB body per stream and 4 MiB per connection without waiting', async () => {
    const { app } = await serve(CONFIG());
    expect((await serverSettings(app.grpcPort)).initialWindowSize).toBe(STREAM_WINDOW); // Node: 65535
    // The connection window is raised with a WINDOW_UPDATE after the handshake: read what this client
    // may send once a PING has made the round trip (so the update has arrived).
    const s = http2.connect(`http://127.0.0.1:${app.grpcPort}`);
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.once('remoteSettings', () => s.ping((err) => (err ? reject(err) : resolve())));
      });
      expect(s.state.remoteWindowSize).toBe(CONNECTION_WINDOW); // Node: 65535
    } finally {
      s.close();
    }
    expect(STREAM_WINDOW).toBe(1024 * 1024);
    expect(CONNECTION_WINDOW).toBe(4 * 1024 * 1024);
  });
});
