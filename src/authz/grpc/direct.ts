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
 * handed to grpc-js's own stream handler unchanged.
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

const CHECK_PATH = '/envoy.service.auth.v3.Authorization/Check';

/** gRPC status codes used here, and what grpc-js (1.14) answers a unary call with in each case. */
const RESOURCE_EXHAUSTED = 8; // the message's length prefix is over the receive limit
const UNIMPLEMENTED = 12; // no complete message, or more than one
const INTERNAL = 13; // a message that does not decode

/**
 * Answers one Check: the request message's bytes in, the response as one gRPC message frame out
 * (encodeCheckResponse(d, true)). Never rejects.
 */
export type DirectHandler = (message: Buffer) => Promise<DirectAnswer>;
export type DirectAnswer = { ok: true; frame: Buffer } | { ok: false; code: number; details: string };

const OK_HEADERS = {
  [h2.HTTP2_HEADER_STATUS]: 200,
  [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity',
};
const OK_TRAILERS = { 'grpc-status': '0' };
const noop = () => {};

/** A plain Check call that this module answers; anything else goes to grpc-js. */
function isDirect(headers: IncomingHttpHeaders): boolean {
  if (headers[h2.HTTP2_HEADER_PATH] !== CHECK_PATH) return false;
  if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST') return false;
  const ct = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
  if (ct !== 'application/grpc' && ct !== 'application/grpc+proto') return false;
  const enc = headers['grpc-encoding'];
  return enc === undefined || enc === 'identity';
}

/** Percent-encode a grpc-message value (gRPC over HTTP/2: printable ASCII except '%'). */
function grpcMessage(s: string): string {
  return s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) =>
    Array.from(Buffer.from(c, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

/** The stream can still take an answer (the client has not reset it, nothing was sent yet). */
function answerable(stream: ServerHttp2Stream): boolean {
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

/** A trailers-only error answer. `early`: the client may still be sending; stop reading its stream. */
function fail(stream: ServerHttp2Stream, code: number, details: string, early = false): void {
  if (!answerable(stream)) return;
  try {
    stream.respond(
      {
        [h2.HTTP2_HEADER_STATUS]: 200,
        [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
        'grpc-status': String(code),
        'grpc-message': grpcMessage(details),
      },
      { endStream: true },
    );
    if (early) stream.close(h2.NGHTTP2_NO_ERROR); // after the answer: RST_STREAM(NO_ERROR), RFC 9113 §8.1
  } catch {
    // closed between the check and the write: the client is gone, nobody to answer
  }
}

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

function serve(stream: ServerHttp2Stream, handle: DirectHandler, maxMessageBytes: number): void {
  stream.on('error', noop); // every error also closes the stream; there is no one left to answer
  // Chunks are kept as received up to MOVE_MIN_BYTES (a small check usually arrives in one chunk and
  // is used in place; a few are joined at the end). A larger message then gets one buffer of its
  // declared size and every chunk is copied in on arrival, so received chunks (and the read buffers
  // behind them) are not held for the whole body, and a body the token pool may move to its worker
  // owns its ArrayBuffer (allocUnsafe never pools sizes like MOVE_MIN_BYTES).
  let chunks: Buffer[] = [];
  let size = 0; // bytes in `chunks`
  let declared = -1; // the message's length prefix, once 5 bytes are in
  let msg: Buffer | undefined; // 5 + declared bytes, filled up to `got`
  let got = 0;
  let refused = false;
  const refuse = (code: number, details: string) => {
    refused = true;
    chunks = [];
    msg = undefined;
    fail(stream, code, details, true);
  };
  /** A second message's prefix is in (bytes past the first): refuse as grpc-js does, 8 or 12. */
  const second = (after: Buffer) => {
    const n = after.readUInt32BE(1);
    if (n > maxMessageBytes)
      refuse(RESOURCE_EXHAUSTED, `Received message larger than max (${n} vs ${maxMessageBytes})`);
    else refuse(UNIMPLEMENTED, `Received a second request message for unary method ${CHECK_PATH}`);
  };
  stream.on('data', (chunk: Buffer) => {
    if (refused) return;
    if (msg) {
      const take = Math.min(chunk.length, msg.length - got);
      chunk.copy(msg, got, 0, take);
      got += take;
      if (take < chunk.length) {
        chunks.push(chunk.subarray(take)); // past the message
        size += chunk.length - take;
        if (size >= 5) second(Buffer.concat(chunks, size));
      }
      return;
    }
    chunks.push(chunk);
    size += chunk.length;
    if (declared < 0) {
      if (size < 5) return;
      declared = (chunks[0].length >= 5 ? chunks[0] : Buffer.concat(chunks, size)).readUInt32BE(1);
      if (declared > maxMessageBytes) {
        refuse(RESOURCE_EXHAUSTED, `Received message larger than max (${declared} vs ${maxMessageBytes})`);
        return;
      }
    }
    if (size >= 5 + declared + 5) {
      second(Buffer.concat(chunks, size).subarray(5 + declared));
    } else if (size < 5 + declared && size >= MOVE_MIN_BYTES) {
      // A large message with more to come: one buffer for it from now on (allocated only once 64 KiB
      // have arrived, so a bare length prefix cannot make us reserve the receive limit per stream).
      msg = Buffer.allocUnsafe(5 + declared);
      for (const c of chunks) {
        c.copy(msg, got);
        got += c.length;
      }
      chunks = [];
      size = 0;
    }
  });
  stream.on('end', () => {
    if (refused) return;
    let message: Buffer;
    if (msg) {
      if (got < msg.length) {
        fail(stream, UNIMPLEMENTED, `Received no request message for unary method ${CHECK_PATH}`);
        return;
      }
      message = msg.subarray(5);
    } else {
      if (declared < 0 || size < 5 + declared) {
        chunks = [];
        fail(stream, UNIMPLEMENTED, `Received no request message for unary method ${CHECK_PATH}`);
        return;
      }
      // One chunk (the common small check) is used in place; several are joined once. A body the
      // token pool may move is never a received chunk's bytes (see above).
      const whole =
        chunks.length === 1 && declared < MOVE_MIN_BYTES ? chunks[0] : Buffer.concat(chunks, size);
      message = whole.subarray(5, 5 + declared);
    }
    chunks = [];
    msg = undefined;
    // (1-4 stray bytes after the message, too few for a second prefix, are dropped, as grpc-js does.
    // The compressed flag is ignored, as grpc-js does when grpc-encoding is identity.)
    handle(message)
      .then(
        (a) => answer(stream, a),
        (err: Error) => fail(stream, INTERNAL, err.message),
      )
      .catch(noop);
  });
}

/**
 * Take over Check streams on every HTTP/2 server of a bound grpc-js Server. True when installed;
 * false if grpc-js's servers or its stream handler could not be found (grpc-js internals changed):
 * then grpc-js serves Check as before.
 */
export function serveCheckDirectly(server: Server, handle: DirectHandler, maxMessageBytes: number): boolean {
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
  for (const [h2s, grpcHandler] of found) {
    h2s.removeListener('stream', grpcHandler);
    h2s.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ...rest: unknown[]) => {
      if (!isDirect(headers)) {
        grpcHandler.call(h2s, stream, headers, ...rest);
        return;
      }
      opened(stream);
      serve(stream, handle, maxMessageBytes);
    });
  }
  return true;
}
