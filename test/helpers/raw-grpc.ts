/**
 * A gRPC call made by hand over HTTP/2 (node:http2), so every header and byte of the answer can be
 * read and the request can be cut into DATA frames at will (test/grpc-direct.test.ts,
 * test/ext-proc-direct.test.ts).
 */
import http2 from 'node:http2';

export interface RawAnswer {
  headers: http2.IncomingHttpHeaders;
  trailers?: http2.IncomingHttpHeaders;
  body: Buffer;
  /** grpc-status from the trailers, or from the headers of a trailers-only answer. */
  status: number;
  message?: string;
}

/** One gRPC message frame: the compressed flag, the length, the bytes. */
export function grpcFrame(message: Uint8Array, flag = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flag;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** The messages of a gRPC response body (length-prefixed frames). */
export function grpcMessages(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 5 <= body.length; at += 5 + body.readUInt32BE(at + 1))
    out.push(body.subarray(at + 5, at + 5 + body.readUInt32BE(at + 1)));
  return out;
}

/**
 * POST `path` on 127.0.0.1:`port` with `headers`; `send` writes the request (and ends or resets the
 * stream). Stream errors (a reset) are ignored: the answer is what arrived before the close.
 */
export function rawGrpc(
  port: number,
  path: string,
  headers: Record<string, string>,
  send: (s: http2.ClientHttp2Stream) => void,
): Promise<RawAnswer> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  return new Promise<RawAnswer>((resolve, reject) => {
    session.on('error', reject);
    const s = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    let head: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    s.on('response', (h) => {
      head = h;
    });
    s.on('trailers', (t) => {
      trailers = t;
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.on('close', () => {
      const last = trailers ?? head;
      resolve({
        headers: head,
        trailers,
        body: Buffer.concat(chunks),
        status: Number(last['grpc-status']),
        message: last['grpc-message'] as string | undefined,
      });
    });
    send(s);
  }).finally(() => session.close());
}
