/**
 * What the direct paths (direct.ts for Check, direct-process.ts for ext_proc's Process) share: which
 * streams are plain gRPC calls they may answer, the answer headers, and the trailers-only error answer.
 */
import { constants as h2, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';

/** gRPC status codes the direct paths answer with (as grpc-js 1.14 would, see each caller). */
export const RESOURCE_EXHAUSTED = 8;
export const UNIMPLEMENTED = 12;
export const INTERNAL = 13;

export const OK_HEADERS = {
  [h2.HTTP2_HEADER_STATUS]: 200,
  [h2.HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc+proto',
  'grpc-accept-encoding': 'identity',
};
export const OK_TRAILERS = { 'grpc-status': '0' };
export const noop = () => {};

/**
 * A plain gRPC call to `path`: POST, content-type application/grpc[+proto], no grpc-encoding other
 * than identity (a compressed call is grpc-js's to serve).
 */
export function isPlainCall(headers: IncomingHttpHeaders, path: string): boolean {
  if (headers[h2.HTTP2_HEADER_PATH] !== path) return false;
  if (headers[h2.HTTP2_HEADER_METHOD] !== 'POST') return false;
  const ct = headers[h2.HTTP2_HEADER_CONTENT_TYPE];
  if (ct !== 'application/grpc' && ct !== 'application/grpc+proto') return false;
  const enc = headers['grpc-encoding'];
  return enc === undefined || enc === 'identity';
}

/** Percent-encode a grpc-message value (gRPC over HTTP/2: printable ASCII except '%'). */
export function grpcMessage(s: string): string {
  return s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) =>
    Array.from(Buffer.from(c, 'utf8'), (b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''),
  );
}

/** The stream can still take an answer (the client has not reset it, nothing was sent yet). */
export function answerable(stream: ServerHttp2Stream): boolean {
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

/** A trailers-only error answer. `early`: the client may still be sending; stop reading its stream. */
export function fail(stream: ServerHttp2Stream, code: number, details: string, early = false): void {
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
