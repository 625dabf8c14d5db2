/**
 * Request buffers of the direct gRPC path (issue 19, item 7): memory grows with the bytes a client
 * actually sends, never with the length prefix it declares, and the bytes held across all streams are
 * capped (server.max_buffered_bytes): past the cap new streams are refused with RESOURCE_EXHAUSTED.
 * A real `tollgate serve` process under `ulimit -v`, 400 streams that each declare a 16 MiB message and
 * send 70 KiB of it, then stall: the process survives and still answers a normal Check.
 */
import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';

const CHECK = '/envoy.service.auth.v3.Authorization/Check';
const STREAMS = 400;
const PER_CONNECTION = 50; // under max_concurrent_streams (128)
const SENT = 70 * 1024; // past the 64 KiB after which the old code reserved the declared size
const DECLARED = 16 * 1024 * 1024; // under the receive limit of the default max_body_bytes (2 × 8 MiB + 1 MiB)
// 3 GiB of address space: a tollgate process starts at ~1-1.7 GB of it; 400 × 16 MiB would not fit
const ULIMIT_V_KIB = 3 * 1024 * 1024;

const CONFIG = (server = '') => `
server:
  decision_deadline: 2s
${server}
store:
  timeout: 1s
limits:
  - { name: per-tenant, per: tenant, requests: 100, every: 1h }
`;

interface Stalled {
  sessions: http2.ClientHttp2Session[];
  /** grpc-status of each stream answered before the end (refused ones), by stream index. */
  statuses: Map<number, number>;
  /** Resolves once every stream's bytes were written, or the stream was answered or failed. */
  written: Promise<void>;
}

/** STREAMS Check streams, each a 5-byte prefix declaring DECLARED bytes plus SENT bytes, never ended. */
function stall(port: number, declared = DECLARED, encoding?: string): Stalled {
  const sessions: http2.ClientHttp2Session[] = [];
  const statuses = new Map<number, number>();
  const writes: Promise<void>[] = [];
  const head = Buffer.alloc(5);
  head.writeUInt32BE(declared, 1);
  const payload = Buffer.concat([head, Buffer.alloc(SENT - 5, 0x61)]);
  for (let i = 0; i < STREAMS; i++) {
    if (i % PER_CONNECTION === 0) {
      const s = http2.connect(`http://127.0.0.1:${port}`);
      s.on('error', () => {});
      sessions.push(s);
    }
    const st = sessions[sessions.length - 1].request({
      ':method': 'POST',
      ':path': CHECK,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...(encoding ? { 'grpc-encoding': encoding } : {}),
    });
    st.on('error', () => {});
    const done = new Promise<void>((resolve) => {
      const record = (h: http2.IncomingHttpHeaders) => {
        if (h['grpc-status'] === undefined) return;
        statuses.set(i, Number(h['grpc-status']));
        resolve(); // answered (refused) before its bytes could all be sent
      };
      st.on('response', record);
      st.on('trailers', record);
      st.on('close', () => resolve());
      st.write(payload, () => resolve());
    });
    writes.push(done);
  }
  return { sessions, statuses, written: Promise.all(writes).then(() => {}) };
}

async function metric(httpPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, 'm'));
  return m ? Number(m[1]) : Number.NaN;
}

const procs: TollgateProc[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop('SIGKILL');
});

describe('direct gRPC path: request buffers', { timeout: 60_000 }, () => {
  it(`${STREAMS} streams declaring 16 MiB and sending 70 KiB each, under ulimit -v: the process survives and answers`, async () => {
    const p = await spawnTollgate({ yaml: CONFIG(), ulimitVKiB: ULIMIT_V_KIB });
    procs.push(p);
    const s = stall(p.grpcPort);
    await s.written;
    await new Promise((r) => setTimeout(r, 500)); // let the server read what is in its sockets
    expect(p.proc.exitCode, p.output().slice(-2000)).toBeNull();
    expect(p.proc.signalCode).toBeNull();
    // bytes held grow with what arrived (~70 KiB a stream, rounded up to 128 KiB buffers), not 16 MiB
    const held = await metric(p.httpPort, 'tollgate_grpc_buffered_bytes');
    expect(held).toBeLessThanOrEqual(64 * 1024 * 1024); // the default cap
    // a normal Check still gets a normal answer while the stalled streams are open
    const c = new EnvoyClient(p.grpcPort);
    try {
      const a = await c.check({ headers: { 'x-tenant-id': 'after' }, body: chat('gpt-4o-mini', 'hello') });
      expect(a.allowed).toBe(true);
      expect(a.headers['x-ratelimit-remaining-requests']).toBe('99');
    } finally {
      c.close();
    }
    for (const x of s.sessions) x.destroy();
    expect(p.proc.exitCode).toBeNull();
  });

  for (const encoding of [undefined, 'gzip']) {
    const path = encoding ? 'compressed calls (handed to grpc-js)' : 'the direct path';
    it(`server.max_buffered_bytes, ${path}: past the cap streams get RESOURCE_EXHAUSTED; the bytes are given back`, async () => {
      // max_body_bytes 1 MiB → receive limit 3 MiB; cap 4 MiB: room for ~32 of the 128 KiB buffers
      const cap = 4 * 1024 * 1024;
      const p = await spawnTollgate({
        yaml: CONFIG(`  max_body_bytes: 1048576\n  max_buffered_bytes: ${cap}`),
      });
      procs.push(p);
      const s = stall(p.grpcPort, 2 * 1024 * 1024, encoding);
      await s.written;
      await new Promise((r) => setTimeout(r, 500));
      const refused = [...s.statuses.values()];
      expect(refused.length).toBeGreaterThan(STREAMS / 2);
      expect(refused.every((code) => code === 8)).toBe(true); // RESOURCE_EXHAUSTED
      expect(await metric(p.httpPort, 'tollgate_grpc_buffered_bytes')).toBeLessThanOrEqual(cap);
      expect(await metric(p.httpPort, 'tollgate_grpc_streams_refused_total')).toBe(refused.length);
      for (const x of s.sessions) x.destroy();
      // once the stalled streams are gone, their bytes are given back and checks are served again
      const deadline = Date.now() + 5000;
      while ((await metric(p.httpPort, 'tollgate_grpc_buffered_bytes')) > 0 && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      expect(await metric(p.httpPort, 'tollgate_grpc_buffered_bytes')).toBe(0);
      const c = new EnvoyClient(p.grpcPort);
      try {
        const a = await c.check({ headers: { 'x-tenant-id': 'after' }, body: chat('gpt-4o-mini', 'hello') });
        expect(a.allowed).toBe(true);
      } finally {
        c.close();
      }
      expect(p.proc.exitCode).toBeNull();
    });
  }
});
