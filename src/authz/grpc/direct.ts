/**
 * Check served straight from grpc-js's HTTP/2 server (server.grpc_direct_check).
 *
 * grpc-js's server layer costs about as much per call as everything tollgate adds
 * (docs/performance.md): a Metadata object built from the headers, an interceptor chain, a deadline timer, a
 * message decoder and a compression filter with their promise hops, channelz counters, and the same
 * again on the way out. The one hot RPC needs none of that: one length-prefixed message in, one out.
 *
 * So grpc-js still owns the listening socket, TLS, sessions (keepalive, max_concurrent_streams,
 * GOAWAY and shutdown, which close our streams with their sessions) and every other RPC (health,
 * anything unknown). Only a stream that is a plain Check call (path
 * /envoy.service.auth.v3.Authorization/Check, content-type application/grpc[+proto], no
 * grpc-encoding other than identity) is answered here; everything else, compressed calls included, is
 * handed to grpc-js's own stream handler unchanged. The same takeover (serveDirectly, one 'stream'
 * listener) routes plain ext_proc Process streams to direct-process.ts (server.grpc_direct_process).
 *
 * What a client sees is what grpc-js would answer: 200 with content-type application/grpc+proto, one
 * message, trailers grpc-status 0; and for bad input grpc-js's status codes (test/grpc-direct.test.ts
 * sends each case to both paths): RESOURCE_EXHAUSTED when the length prefix is over the receive limit,
 * UNIMPLEMENTED when there is no complete message or a second one, INTERNAL when the message does not
 * decode. The details text may differ. One difference on purpose: a second message is refused as
 * soon as its length prefix arrives (so a stream never holds more than one message), where grpc-js
 * waits for it to complete and, if the client ends the stream before that, answers the first.
 *
 * `grpc-timeout` is not enforced here: the decision has its own bound (server.decision_deadline for
 * the store), and a client that gave up has reset the stream, so its answer is dropped (the debit
 * stands, as with grpc-js, which also let a timed-out handler run to its end).
 */
import {
  type Http2Server,
  constants as h2,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Server } from '@grpc/grpc-js';
import { MOVE_MIN_BYTES } from '../../decision/types.js';
import {
  answerable,
  fail,
  INTERNAL,
  isPlainCall,
  noop,
  OK_HEADERS,
  OK_TRAILERS,
  RESOURCE_EXHAUSTED,
  UNIMPLEMENTED,
} from './direct-h2.js';
import { EXT_PROC_PROCESS_PATH } from './ext-proc-protos.js';

const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/**
 * Answers one Check: the request message's bytes in, the response as one gRPC message frame out
 * (encodeCheckResponse(d, true)). Never rejects.
 */
export type DirectHandler = (message: Buffer) => Promise<DirectAnswer>;
export type DirectAnswer = { ok: true; frame: Buffer } | { ok: false; code: number; details: string };

function answer(stream: ServerHttp2Stream, a: DirectAnswer): void {
  if (!a.ok) {
    fail(stream, a.code, a.details);
    return;
  }
  if (!answerable(stream)) return; // the client reset the call (e.g. its timeout): the answer is dropped
  try {
    stream.respond(OK_HEADERS, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      try {
        stream.sendTrailers(OK_TRAILERS);
      } catch {
        // reset after the message was queued
      }
    });
    stream.end(a.frame);
  } catch {
    // closed between the check and the write
  }
}

/**
 * Request bytes held across all Check streams (server.max_buffered_bytes). A stream is charged for
 * what it holds (received chunks, or the capacity of its message buffer) until it closes.
 */
export class BufferBudget {
  used = 0;
  /** Streams refused with RESOURCE_EXHAUSTED because the budget was spent. */
  refused = 0;
  constructor(public max: number) {}

  /** Charge `stream` `delta` more bytes; false (nothing charged) when that would pass the budget. */
  charge(stream: Charged, delta: number): boolean {
    if (delta > 0 && this.used + delta > this.max) return false;
    this.used += delta;
    stream.charged += delta;
    return true;
  }

  /** Everything `stream` was charged goes back (it closed). */
  settle(stream: Charged): void {
    this.used -= stream.charged;
    stream.charged = 0;
  }
}
interface Charged {
  charged: number;
}

const TOO_MUCH_BUFFERED = 'Server is holding too many request bytes (server.max_buffered_bytes); retry';

/** Refuse a stream when the budget is already spent; else charge it until it closes. */
function admit(stream: ServerHttp2Stream, budget: BufferBudget): Charged | undefined {
  if (budget.used >= budget.max) {
    budget.refused++;
    stream.on('error', noop);
    fail(stream, RESOURCE_EXHAUSTED, TOO_MUCH_BUFFERED, true);
    return undefined;
  }
  const c: Charged = { charged: 0 };
  stream.once('close', () => budget.settle(c));
  return c;
}

/**
 * The capacity to grow a large message's buffer to, holding `need` bytes: doubling (so copies cost at
 * most twice the bytes received), never past the whole message (so the last step is its exact size and
 * the body owns its ArrayBuffer, see the token pool's `movable`).
 */
function grown(cap: number, need: number, total: number): number {
  return Math.min(total, Math.max(need, cap * 2, 2 * MOVE_MIN_BYTES));
}

function serve(
  stream: ServerHttp2Stream,
  handle: DirectHandler,
  maxMessageBytes: number,
  budget: BufferBudget,
): void {
  stream.on('error', noop); // every error also closes the stream; there is no one left to answer
  const acct = admit(stream, budget);
  if (!acct) return;
  const r = new Receiver(stream, handle, maxMessageBytes, budget, acct);
  stream.on('data', (chunk: Buffer) => r.data(chunk));
  stream.on('end', () => r.end());
}

/**
 * One direct Check stream's request bytes (one object per stream; its methods are shared).
 *
 * Chunks are kept as received up to MOVE_MIN_BYTES (a small check usually arrives in one chunk and
 * is used in place; a few are joined at the end). A larger message then gets a buffer that grows
 * with the bytes actually received (never the declared size up front: a length prefix costs the
 * sender nothing), every chunk copied in on arrival, so received chunks (and the read buffers behind
 * them) are not held for the whole body, and the final buffer is the message's exact size.
 */
class Receiver {
  chunks: Buffer[] = [];
  /** Bytes in `chunks`. */
  size = 0;
  /** The message's length prefix, once 5 bytes are in. */
  declared = -1;
  /** Filled up to `got`; grows towards 5 + declared. */
  msg: Buffer | undefined = undefined;
  got = 0;
  refused = false;

  constructor(
    readonly stream: ServerHttp2Stream,
    readonly handle: DirectHandler,
    readonly maxMessageBytes: number,
    readonly budget: BufferBudget,
    readonly acct: Charged,
  ) {}

  refuse(code: number, details: string): void {
    this.refused = true;
    this.chunks = [];
    this.msg = undefined;
    fail(this.stream, code, details, true);
  }

  overBudget(): void {
    this.budget.refused++;
    this.refuse(RESOURCE_EXHAUSTED, TOO_MUCH_BUFFERED);
  }

  /** A second message's prefix is in (bytes past the first): refuse as grpc-js does, 8 or 12. */
  second(after: Buffer): void {
    const n = after.readUInt32BE(1);
    if (n > this.maxMessageBytes)
      this.refuse(RESOURCE_EXHAUSTED, `Received message larger than max (${n} vs ${this.maxMessageBytes})`);
    else this.refuse(UNIMPLEMENTED, `Received a second request message for unary method ${CHECK_PATH}`);
  }

  /** Copy `chunk` into the message buffer, growing it as needed; false when over the budget. */
  append(chunk: Buffer, take: number): boolean {
    const total = 5 + this.declared;
    let msg = this.msg;
    if (!msg || this.got + take > msg.length) {
      const cap = grown(msg?.length ?? 0, this.got + take, total);
      if (!this.budget.charge(this.acct, cap - (msg?.length ?? 0))) return false;
      const next = Buffer.allocUnsafe(cap);
      if (msg) msg.copy(next, 0, 0, this.got);
      this.msg = msg = next;
    }
    chunk.copy(msg, this.got, 0, take);
    this.got += take;
    return true;
  }

  data(chunk: Buffer): void {
    if (this.refused) return;
    if (this.msg) {
      this.dataIntoMessage(chunk);
      return;
    }
    if (!this.budget.charge(this.acct, chunk.length)) {
      this.overBudget();
      return;
    }
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.declared < 0) {
      if (this.size < 5) return;
      const first = this.chunks[0];
      this.declared = (first.length >= 5 ? first : Buffer.concat(this.chunks, this.size)).readUInt32BE(1);
      if (this.declared > this.maxMessageBytes) {
        const max = this.maxMessageBytes;
        this.refuse(RESOURCE_EXHAUSTED, `Received message larger than max (${this.declared} vs ${max})`);
        return;
      }
    }
    const size = this.size;
    if (size >= 5 + this.declared + 5) {
      this.second(Buffer.concat(this.chunks, size).subarray(5 + this.declared));
    } else if (size < 5 + this.declared && size >= MOVE_MIN_BYTES) {
      // A large message with more to come: from now on one buffer, grown with what arrives.
      const held = this.chunks;
      this.chunks = [];
      this.size = 0;
      for (const c of held) {
        if (!this.append(c, c.length)) {
          this.overBudget();
          return;
        }
      }
      this.budget.charge(this.acct, -size);
    }
  }

  /** A chunk for the growing message buffer (and, past the message, the start of a second one). */
  private dataIntoMessage(chunk: Buffer): void {
    const take = Math.min(chunk.length, 5 + this.declared - this.got);
    if (!this.append(chunk, take)) {
      this.overBudget();
      return;
    }
    if (take < chunk.length) {
      this.chunks.push(chunk.subarray(take)); // past the message
      this.size += chunk.length - take;
      if (this.size >= 5) this.second(Buffer.concat(this.chunks, this.size));
    }
  }

  end(): void {
    if (this.refused) return;
    const message = this.message();
    this.chunks = [];
    this.msg = undefined;
    if (!message) {
      fail(this.stream, UNIMPLEMENTED, `Received no request message for unary method ${CHECK_PATH}`);
      return;
    }
    // (1-4 stray bytes after the message, too few for a second prefix, are dropped, as grpc-js does.
    // The compressed flag is ignored, as grpc-js does when grpc-encoding is identity.)
    const stream = this.stream;
    this.handle(message)
      .then(
        (a) => answer(stream, a),
        (err: Error) => fail(stream, INTERNAL, err.message),
      )
      .catch(noop);
  }

  /** The complete request message; undefined when the stream ended before it was whole. */
  private message(): Buffer | undefined {
    const declared = this.declared;
    if (this.msg) return this.got < 5 + declared ? undefined : this.msg.subarray(5, 5 + declared);
    if (declared < 0 || this.size < 5 + declared) return undefined;
    // One chunk (the common small check) is used in place; several are joined once. A body the
    // token pool may move is never a received chunk's bytes (see above).
    const whole =
      this.chunks.length === 1 && declared < MOVE_MIN_BYTES
        ? this.chunks[0]
        : Buffer.concat(this.chunks, this.size);
    return whole.subarray(5, 5 + declared);
  }
}

/**
 * A Check stream handed to grpc-js (a compressed call): grpc-js keeps its received chunks as a list
 * (it grows with the bytes received; decompression is bounded by the receive limit). Its bytes count
 * against the same budget until it closes; it is refused (RESOURCE_EXHAUSTED, the stream closed, so
 * grpc-js drops what it held) at its start or at the chunk that would pass the budget. Call after
 * grpc-js attached its own listeners (ours must not change the flow).
 */
function meterForGrpcJs(stream: ServerHttp2Stream, acct: Charged, budget: BufferBudget): void {
  let refused = false;
  stream.on('data', (chunk: Buffer) => {
    if (refused || budget.charge(acct, chunk.length)) return;
    refused = true;
    budget.refused++;
    fail(stream, RESOURCE_EXHAUSTED, TOO_MUCH_BUFFERED, true);
  });
}

/** What the direct paths serve: Check (its handler and buffer budget) and/or Process streams. */
export interface DirectRoutes {
  check?: { handle: DirectHandler; budget: BufferBudget };
  /** Serves one plain Process stream (direct-process.ts serveProcess, bound to the handler). */
  process?: (stream: ServerHttp2Stream) => void;
}

/**
 * Take over the streams of every HTTP/2 server of a bound grpc-js Server: plain Check and Process
 * calls (each when routed) are served here, everything else goes to grpc-js's own stream handler.
 * True when installed; false if grpc-js's servers or its stream handler could not be found (grpc-js
 * internals changed): then grpc-js serves everything as before.
 */
export function serveDirectly(server: Server, routes: DirectRoutes, maxMessageBytes: number): boolean {
  const internals = server as unknown as {
    http2Servers?: Map<Http2Server, unknown>;
    /** Counts the stream for grpc.max_connection_idle_ms (a no-op unless that is set). */
    onStreamOpened?: (stream: ServerHttp2Stream) => void;
  };
  const servers = internals.http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  const found: [Http2Server, (...args: unknown[]) => void][] = [];
  for (const h2s of servers.keys()) {
    const listeners = h2s.listeners('stream');
    if (listeners.length !== 1) return false;
    found.push([h2s, listeners[0] as (...args: unknown[]) => void]);
  }
  const opened =
    typeof internals.onStreamOpened === 'function' ? internals.onStreamOpened.bind(server) : noop;
  const { check, process } = routes;
  for (const [h2s, grpcHandler] of found) {
    h2s.removeListener('stream', grpcHandler);
    h2s.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      if (check && isPlainCall(headers, CHECK_PATH)) {
        opened(stream);
        serve(stream, check.handle, maxMessageBytes, check.budget);
      } else if (process && isPlainCall(headers, EXT_PROC_PROCESS_PATH)) {
        opened(stream);
        process(stream);
      } else {
        const acct =
          check && headers[h2.HTTP2_HEADER_PATH] === CHECK_PATH ? admit(stream, check.budget) : null;
        if (acct === undefined) return; // refused: over the budget
        grpcHandler.call(h2s, stream, headers, ...rest);
        if (acct && check) meterForGrpcJs(stream, acct, check.budget);
      }
    });
  }
  return true;
}
