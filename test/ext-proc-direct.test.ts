/**
 * server.grpc_direct_process: ext_proc's Process read and answered straight from grpc-js's HTTP/2
 * server (src/authz/grpc/direct-process.ts) must behave as through grpc-js (grpc_direct_process:
 * false). Each case runs on both paths with messages encoded from Envoy's OFFICIAL protos: the same
 * settlements, no answers in observability mode and one matching answer per message otherwise,
 * messages split across DATA frames or several in one, a client reset mid-stream settling once, and
 * the same statuses for bad input. `grpc-accept-encoding` tells the paths apart (`identity` direct).
 */
import http2 from 'node:http2';
import { afterAll, describe, expect, it } from 'vitest';
import { chat } from './helpers/envoy.js';
import { extProcMessages, officialExtProc } from './helpers/ext-proc.js';
import { chatJson } from './helpers/provider-bodies.js';
import { grpcFrame, grpcMessages, type RawAnswer, rawGrpc } from './helpers/raw-grpc.js';
import { type SettleApp, startSettleApp, waitFor } from './helpers/settle.js';

const PROCESS = '/envoy.service.ext_proc.v3.ExternalProcessor/Process';
const CONFIG = (direct: boolean) => `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    default_max_output_tokens: 1024
    price_usd_per_1m: { input: 15, output: 60 }
limits:
  - { name: tok, per: tenant, tokens: 1000000, reset: daily }
server:
  max_body_bytes: 4096
  grpc_direct_process: ${direct}
`;
/** The receive limit with max_body_bytes 4096 (2 × 4096 + 1 MiB). */
const LIMIT = 2 * 4096 + 1024 * 1024;

const root = officialExtProc();
const Req = root.lookupType('envoy.service.ext_proc.v3.ProcessingRequest');
const Res = root.lookupType('envoy.service.ext_proc.v3.ProcessingResponse');

const frame = grpcFrame;
const framed = (messages: Record<string, unknown>[]) =>
  Buffer.concat(messages.map((m) => frame(Buffer.from(Req.encode(Req.fromObject(m)).finish()))));

/** The answers of a Process call, decoded with the official protos. */
type RawProcessAnswer = RawAnswer & { answers: Record<string, any>[] };

/**
 * A Process call made by hand over HTTP/2: `writes` sent one by one (a turn of the event loop apart,
 * so each is its own DATA frame), then the half-close, or a reset (`reset`).
 */
async function rawProcess(
  port: number,
  writes: Buffer[],
  reset = false,
  extra: Record<string, string> = {},
): Promise<RawProcessAnswer> {
  const r = await rawGrpc(port, PROCESS, extra, (s) => {
    (async () => {
      for (const w of writes) {
        s.write(w);
        await new Promise((done) => setTimeout(done, 2));
      }
      if (reset) {
        await new Promise((done) => setTimeout(done, 20));
        s.close(http2.constants.NGHTTP2_CANCEL);
      } else s.end();
    })();
  });
  const answers = grpcMessages(r.body).map((m) => Res.toObject(Res.decode(m), { oneofs: true }));
  return { ...r, answers };
}

const apps: SettleApp[] = [];
afterAll(async () => {
  for (const a of apps) await a.close();
});
let n = 0;
const tenant = () => `dp${Date.now()}-${++n}`;

describe.each([
  ['direct', true],
  ['grpc-js', false],
])('Process (%s)', (_name, direct) => {
  let app: SettleApp | undefined;
  const start = async () => {
    if (!app) {
      app = await startSettleApp(CONFIG(direct));
      apps.push(app);
    }
    return app;
  };
  const reserve = async (s: SettleApp) => {
    const a = await s.envoy.check({
      headers: { 'x-tenant-id': tenant() },
      body: chat('gpt-4o', 'hello there', { max_tokens: 500 }),
    });
    expect(a.allowed).toBe(true);
    return a.reservation!;
  };
  const eventsOf = (s: SettleApp, id: string) => s.events.filter((e) => e.id === id);
  const encoding = direct ? 'identity' : 'identity,deflate,gzip';

  it('observability mode: settled, nothing answered, grpc-status 0', async () => {
    const s = await start();
    const id = await reserve(s);
    const msgs = extProcMessages({
      id,
      via: 'both',
      headers: { 'content-type': 'application/json' },
      chunks: [chatJson(7, 9)],
    });
    const r = await rawProcess(s.app.grpcPort, [framed(msgs)]);
    expect(r.status).toBe(0);
    expect(r.answers).toEqual([]);
    const ev = await waitFor(() => eventsOf(s, id)[0]);
    expect(ev?.outcome).toBe('settled');
    expect(ev?.settlement?.tokens.output).toBe(9);
  });

  it('not in observability mode: one matching answer per message; messages split across DATA frames', async () => {
    const s = await start();
    const id = await reserve(s);
    const msgs = extProcMessages({
      id,
      via: 'both',
      observability: false,
      headers: { 'content-type': 'application/json' },
      chunks: ['{"usage":{"prompt_tokens":2,', '"completion_tokens":3}}'],
    });
    const bytes = framed(msgs);
    const pieces: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += 7) pieces.push(bytes.subarray(at, at + 7)); // 7-byte frames
    const r = await rawProcess(s.app.grpcPort, pieces);
    expect(r.status).toBe(0);
    expect(r.headers['content-type']).toBe('application/grpc+proto');
    expect(r.headers['grpc-accept-encoding']).toBe(encoding);
    expect(r.answers.map((a) => a.response)).toEqual([
      'request_headers',
      'response_headers',
      'response_body',
      'response_body',
    ]);
    for (const a of r.answers) expect(a[a.response]).toEqual({ response: {} });
    expect((await waitFor(() => eventsOf(s, id)[0]))?.outcome).toBe('settled');
  });

  it('several messages in one DATA frame, and a frame ending inside a length prefix', async () => {
    const s = await start();
    const id = await reserve(s);
    const msgs = extProcMessages({
      id,
      observability: false,
      headers: { 'content-type': 'application/json' },
      chunks: ['{"usage":{"prompt_tokens":2,', '"completion_tokens":', '4}}', ''],
    });
    const bytes = framed(msgs);
    const first = framed(msgs.slice(0, 2)).length + 2; // two messages and 2 bytes of the third's prefix
    const r = await rawProcess(s.app.grpcPort, [bytes.subarray(0, first), bytes.subarray(first)]);
    expect(r.status).toBe(0);
    expect(r.answers.map((a) => a.response)).toEqual(
      msgs.map((m) => Object.keys(m).find((k) => k.startsWith('re'))),
    );
    const ev = await waitFor(() => eventsOf(s, id)[0]);
    expect(ev?.outcome).toBe('settled');
    expect(ev?.settlement?.tokens.output).toBe(4);
  });

  it('a client reset mid-stream settles once, unanswered', async () => {
    const s = await start();
    const id = await reserve(s);
    const msgs = extProcMessages({
      id,
      headers: { 'content-type': 'application/json' },
      chunks: ['{"usage":{"prompt_tokens":2,', '"completion_tokens":3}}'],
    });
    const bytes = framed(msgs.slice(0, 2));
    const r = await rawProcess(s.app.grpcPort, [bytes, framed(msgs.slice(2, 3)).subarray(0, 9)], true);
    expect(r.answers).toEqual([]);
    const ev = await waitFor(() => eventsOf(s, id)[0]);
    expect(ev?.outcome).toBe('kept'); // the body was cut: its usage is unknown, the reservation stands
    await new Promise((res) => setTimeout(res, 200));
    expect(eventsOf(s, id)).toHaveLength(1);
  });

  it('bad input gets grpc-js statuses: over the receive limit 8, undecodable 13; the session still settles', async () => {
    const s = await start();
    const over = Buffer.alloc(5);
    over.writeUInt32BE(LIMIT + 1, 1);
    const cases: [string, Buffer[], number][] = [
      ['a length prefix over the limit', [over], 8],
      ['a length prefix over the limit, split across frames', [over.subarray(0, 3), over.subarray(3)], 8],
      ['a whole message over the limit', [frame(Buffer.alloc(LIMIT + 1))], 8],
      ['a malformed message', [frame(Buffer.from([0xff, 0xff, 0xff]))], 13],
      ['a message flagged compressed (identity: read as is)', [frame(Buffer.from([0x50, 1]), 1)], 0],
      ['no message at all', [], 0],
      ['a truncated last message (dropped)', [frame(Buffer.from([0x50, 1])).subarray(0, 6)], 0],
    ];
    for (const [what, writes, code] of cases) {
      const r = await rawProcess(s.app.grpcPort, writes);
      expect(r.status, what).toBe(code);
    }
    // a gzip call (its message flagged uncompressed) is grpc-js's on both paths: its answer's headers
    const gz = await rawProcess(s.app.grpcPort, [frame(Buffer.from([0x2a, 0]))], false, {
      'grpc-encoding': 'gzip',
    });
    expect(gz.status).toBe(0);
    expect(gz.headers['grpc-accept-encoding']).toBe('identity,deflate,gzip');
    expect(gz.answers.map((a) => a.response)).toEqual(['response_body']);
    // a valid stream after an over-limit message on a stream that named a reservation settles it
    const id = await reserve(s);
    const head = framed(extProcMessages({ id, headers: { 'content-type': 'application/json' } }).slice(0, 1));
    const r = await rawProcess(s.app.grpcPort, [head, over]);
    expect(r.status).toBe(8);
    expect(['kept', 'settled']).toContain((await waitFor(() => eventsOf(s, id)[0]))?.outcome);
  });
});
