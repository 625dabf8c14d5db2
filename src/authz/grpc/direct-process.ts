/**
 * ext_proc's Process served straight from grpc-js's HTTP/2 server (server.grpc_direct_process), as
 * direct.ts serves Check: grpc-js handles each message of a bidirectional stream on its own (a message
 * decoder, a promise hop for decompression, a deserializer building protobufjs objects then plain ones,
 * an EventEmitter per call...), which made a settled call's 22-message stream cost several times its
 * Check. Here a stream's DATA chunks are cut into gRPC messages as they arrive (a message may span
 * chunks, a chunk may hold several), each message decoded by ext-proc-wire.ts into the object grpc-js
 * would give, and fed to the same handler (src/settle/ext-proc.ts extProcHandler) through a
 * ProcessStream adapter. Answers (when a message is not in observability mode) are pre-encoded frames,
 * those of one chunk written together.
 *
 * What a client sees is what grpc-js answers (test/ext-proc-direct.test.ts drives both): headers 200
 * application/grpc+proto with the first answer or at the end, trailers grpc-status 0 after the client's
 * half-close; RESOURCE_EXHAUSTED for a length prefix over the receive limit (so a stream never holds
 * more than one partial message of at most that size), INTERNAL for a message that does not decode;
 * bytes of an incomplete message at the half-close are dropped and the flag byte is ignored (grpc-js
 * reads a message flagged compressed as identity when grpc-encoding is identity). A client that
 * resets the stream ends the session unanswered (it settles once). `grpc-accept-encoding` is
 * `identity` here and `identity,deflate,gzip` from grpc-js.
 */
import type { ServerHttp2Stream } from 'node:http2';
import type { ProcessStream } from '../../settle/ext-proc.js';
import type { ExtProcProcessingRequest } from '../../settle/messages.js';
import {
  fail,
  grpcMessage,
  INTERNAL,
  noop,
  OK_HEADERS,
  OK_TRAILERS,
  RESOURCE_EXHAUSTED,
} from './direct-h2.js';
import { loadExtProcPackages } from './ext-proc-protos.js';
import { CONTINUE_FRAMES, decodeProcessingRequest } from './ext-proc-wire.js';

type Kind = NonNullable<ExtProcProcessingRequest['request']>;

/** One direct Process stream: the gRPC message reader and the ProcessStream the handler sees. */
class DirectProcessCall implements ProcessStream {
  private onData?: (req: ExtProcProcessingRequest) => void;
  private onEnd?: () => void;
  private onGone: (() => void)[] = [];
  /** Answers written while a chunk is read, sent together after it. */
  private out: Buffer[] = [];
  private reading = false;
  /** Bytes of an incomplete message (its 5-byte prefix included), and its declared length once known. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  private need = -1;
  /** Answered or refused: nothing more is read or written. */
  private done = false;
  private trailers: Record<string, string> = OK_TRAILERS;

  constructor(
    readonly stream: ServerHttp2Stream,
    readonly maxMessageBytes: number,
  ) {}

  on(event: 'data', listener: (req: ExtProcProcessingRequest) => void): this;
  on(event: 'end' | 'cancelled' | 'close', listener: () => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: string, listener: (arg: never) => void): this {
    if (event === 'data') this.onData = listener as (req: ExtProcProcessingRequest) => void;
    else if (event === 'end') this.onEnd = listener as () => void;
    else if (event !== 'error') this.onGone.push(listener as () => void); // 'cancelled', 'close'
    return this;
  }

  writeContinue(kind: Kind): void {
    this.queue(CONTINUE_FRAMES[kind]);
  }

  /** Any ProcessingResponse (the handler writes only continue answers: writeContinue). */
  write(message: Record<string, unknown>): boolean {
    const bytes = loadExtProcPackages().externalProcessor.Process.responseSerialize(message);
    const f = Buffer.alloc(5 + bytes.length);
    f.writeUInt32BE(bytes.length, 1);
    bytes.copy(f, 5);
    this.queue(f);
    return true;
  }

  /** The handler ends the call (after the client's half-close): trailers grpc-status 0. */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.flush();
    this.finish(OK_TRAILERS);
  }

  private queue(frame: Buffer): void {
    if (this.done) return;
    this.out.push(frame);
    if (!this.reading) this.flush();
  }

  /** Headers (once, trailers to follow), then what was queued. False when the stream is gone. */
  private respond(): boolean {
    const s = this.stream;
    if (s.destroyed || s.closed) return false;
    if (!s.headersSent) {
      s.respond(OK_HEADERS, { waitForTrailers: true });
      s.once('wantTrailers', () => {
        try {
          s.sendTrailers(this.trailers);
        } catch {
          // reset meanwhile
        }
      });
    }
    return true;
  }

  private flush(): void {
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    try {
      if (this.respond()) this.stream.write(out.length === 1 ? out[0] : Buffer.concat(out));
    } catch {
      // closed between the check and the write: the close ends the session
    }
  }

  private finish(trailers: Record<string, string>): void {
    this.trailers = trailers;
    try {
      if (this.respond()) this.stream.end();
    } catch {
      // closed meanwhile
    }
  }

  /** Refuse the stream (status `code`) and end the session unanswered. */
  private refuse(code: number, details: string): void {
    if (this.done) return;
    this.done = true;
    this.held = [];
    this.out = [];
    if (!this.stream.headersSent) fail(this.stream, code, details, true);
    else this.finish({ 'grpc-status': String(code), 'grpc-message': grpcMessage(details) });
    this.gone();
  }

  data(chunk: Buffer): void {
    if (this.done) return;
    this.reading = true;
    try {
      this.read(chunk);
    } finally {
      this.reading = false;
    }
    this.flush();
  }

  /** The client's half-close: what is queued goes out, then the handler ends the call. */
  halfClosed(): void {
    if (this.done) return;
    this.held = []; // an incomplete last message is dropped, as grpc-js does
    this.flush();
    this.onEnd?.();
  }

  /** The stream closed (reset, or after its end): the session ends (idempotent in the handler). */
  gone(): void {
    this.done = true;
    this.held = [];
    const listeners = this.onGone;
    this.onGone = [];
    for (const l of listeners) l();
  }

  private read(chunk: Buffer): void {
    let off = 0;
    if (this.heldBytes > 0) {
      off = this.fill(chunk);
      if (off < 0) return;
    }
    const n = chunk.length;
    while (off < n && !this.done) {
      if (n - off < 5) {
        this.hold(chunk.subarray(off));
        return;
      }
      const len = chunk.readUInt32BE(off + 1);
      if (!this.allowed(len)) return;
      if (n - off < 5 + len) {
        this.need = len;
        this.hold(chunk.subarray(off));
        return;
      }
      this.deliver(chunk, off + 5, off + 5 + len);
      off += 5 + len;
    }
  }

  /** A length prefix within the receive limit; else the stream is refused (as grpc-js). */
  private allowed(len: number): boolean {
    if (len <= this.maxMessageBytes) return true;
    this.refuse(RESOURCE_EXHAUSTED, `Received message larger than max (${len} vs ${this.maxMessageBytes})`);
    return false;
  }

  private hold(part: Buffer): void {
    this.held.push(part);
    this.heldBytes += part.length;
  }

  /**
   * Complete the held message with the start of `chunk`: the bytes of `chunk` it took, or -1 when
   * all of it went to a message still incomplete (or the stream was refused).
   */
  private fill(chunk: Buffer): number {
    let used = 0;
    if (this.need < 0) {
      used = Math.min(5 - this.heldBytes, chunk.length);
      this.hold(chunk.subarray(0, used));
      if (this.heldBytes < 5) return -1;
      const prefix = Buffer.concat(this.held, 5);
      this.held = [prefix];
      if (!this.allowed(prefix.readUInt32BE(1))) return -1;
      this.need = prefix.readUInt32BE(1);
    }
    const total = 5 + this.need;
    const take = Math.min(total - this.heldBytes, chunk.length - used);
    if (take > 0) this.hold(chunk.subarray(used, used + take));
    used += take;
    if (this.heldBytes < total) return -1;
    const message = this.held.length === 1 ? this.held[0] : Buffer.concat(this.held, total);
    this.held = [];
    this.heldBytes = 0;
    this.need = -1;
    this.deliver(message, 5, total);
    return this.done ? -1 : used;
  }

  private deliver(buf: Buffer, start: number, end: number): void {
    let req: ExtProcProcessingRequest;
    try {
      req = decodeProcessingRequest(buf, start, end);
    } catch {
      this.refuse(INTERNAL, 'Error deserializing request'); // as grpc-js
      return;
    }
    this.onData?.(req);
  }
}

/** Serve one plain Process stream with `handler` (extProcHandler's). */
export function serveProcess(
  stream: ServerHttp2Stream,
  handler: (call: ProcessStream) => void,
  maxMessageBytes: number,
): void {
  stream.on('error', noop); // every error also closes the stream
  const call = new DirectProcessCall(stream, maxMessageBytes);
  handler(call);
  stream.on('data', (chunk: Buffer) => call.data(chunk));
  stream.on('end', () => call.halfClosed());
  stream.on('close', () => call.gone());
}
