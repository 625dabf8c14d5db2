/**
 * Response-body content decoding for the response phase: `content-encoding` gzip (x-gzip), deflate
 * (zlib-wrapped as RFC 9110 says, or raw deflate as some servers send — told apart by the first two
 * bytes), br, and identity. Chunks go in as Envoy streams them (split anywhere); decoded chunks come
 * out in order through `onData`, and are not retained here.
 *
 * Bounds: memory is bounded by zlib's working buffers (16 KiB output chunks; nothing is accumulated),
 * and the decoded output by `maxOutputBytes` (default 64 MiB): past it decoding stops, the zlib
 * stream is destroyed, further input is ignored, and the result says `truncated` — a decompression
 * bomb costs at most that much inflation work. What was decoded up to the bound has been delivered;
 * the usage (normally at the end of a body) is then missing, so the caller's usage resolution falls
 * back to counting what it saw (never less than the reported partial counts), or leaves the
 * reservation standing.
 *
 * Unsupported encodings (zstd, compress, a list of several codings) decode nothing: `error` says so
 * and the caller leaves the reservation standing (or strips accept-encoding on the provider route).
 */
import type { Transform } from 'node:stream';
import * as zlib from 'node:zlib';

export const DEFAULT_MAX_DECODED_BYTES = 64 << 20;

export type ContentCoding = 'identity' | 'gzip' | 'deflate' | 'br';

export interface DecodeResult {
  /** Decoded bytes delivered to onData. */
  outputBytes: number;
  /** Compressed bytes written. */
  inputBytes: number;
  /** Decoding stopped at maxOutputBytes. */
  truncated: boolean;
  /** Unsupported encoding, or corrupt / incomplete compressed data (what decoded before it was delivered). */
  error?: string;
}

/** The coding named by a content-encoding header value; undefined when unsupported. */
export function parseContentEncoding(value: string | undefined): ContentCoding | undefined {
  if (value === undefined) return 'identity';
  const codings = value
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0 && s !== 'identity');
  if (codings.length === 0) return 'identity';
  if (codings.length > 1) return undefined;
  switch (codings[0]) {
    case 'gzip':
    case 'x-gzip':
      return 'gzip';
    case 'deflate':
      return 'deflate';
    case 'br':
      return 'br';
    default:
      return undefined;
  }
}

export interface BodyDecoderOptions {
  maxOutputBytes?: number;
}

export class BodyDecoder {
  private readonly coding: ContentCoding | undefined;
  private readonly max: number;
  private z?: Transform;
  private outputBytes = 0;
  private inputBytes = 0;
  private truncated = false;
  private error?: string;
  private done = false;
  private ended = false;
  private finished?: Promise<DecodeResult>;
  private resolveFinished?: (r: DecodeResult) => void;

  /**
   * @param contentEncoding the response's content-encoding header value (undefined: identity).
   * @param onData receives decoded chunks, in order (for identity: synchronously, the chunks as given).
   */
  constructor(
    contentEncoding: string | undefined,
    private readonly onData: (chunk: Uint8Array) => void,
    opts: BodyDecoderOptions = {},
  ) {
    this.coding = parseContentEncoding(contentEncoding);
    this.max = opts.maxOutputBytes ?? DEFAULT_MAX_DECODED_BYTES;
    if (this.coding === undefined) {
      this.error = `unsupported content-encoding: ${String(contentEncoding).slice(0, 64)}`;
      this.done = true;
    }
  }

  write(chunk: Uint8Array): void {
    if (this.done || this.ended || chunk.byteLength === 0) return;
    this.inputBytes += chunk.byteLength;
    if (this.coding === 'identity') {
      this.deliver(chunk);
      return;
    }
    if (!this.z) this.z = this.start(chunk);
    this.z.write(Buffer.from(chunk)); // copy: the caller may reuse its buffer
  }

  /** Ends the input; resolves once everything decodable has been delivered (idempotent). */
  end(): Promise<DecodeResult> {
    if (this.finished) return this.finished;
    this.ended = true;
    if (this.done || this.coding === 'identity' || !this.z) {
      this.done = true;
      this.finished = Promise.resolve(this.result());
      return this.finished;
    }
    this.finished = new Promise((resolve) => {
      this.resolveFinished = resolve;
    });
    this.z.end();
    return this.finished;
  }

  private result(): DecodeResult {
    const r: DecodeResult = {
      outputBytes: this.outputBytes,
      inputBytes: this.inputBytes,
      truncated: this.truncated,
    };
    if (this.error !== undefined) r.error = this.error;
    return r;
  }

  private settle(): void {
    this.done = true;
    if (this.resolveFinished) {
      const r = this.resolveFinished;
      this.resolveFinished = undefined;
      r(this.result());
    }
  }

  private deliver(chunk: Uint8Array): void {
    if (this.done) return;
    const room = this.max - this.outputBytes;
    if (chunk.byteLength > room) {
      if (room > 0) {
        this.outputBytes += room;
        this.onData(chunk.subarray(0, room));
      }
      this.truncated = true;
      this.done = true;
      this.z?.destroy();
      this.settle();
      return;
    }
    this.outputBytes += chunk.byteLength;
    this.onData(chunk);
  }

  private start(first: Uint8Array): Transform {
    const flush = { finishFlush: zlib.constants.Z_SYNC_FLUSH };
    let z: Transform;
    if (this.coding === 'gzip') z = zlib.createGunzip(flush);
    else if (this.coding === 'br')
      z = zlib.createBrotliDecompress({ finishFlush: zlib.constants.BROTLI_OPERATION_FLUSH });
    else {
      // zlib header: CM = 8 in the low nibble of CMF, and (CMF·256 + FLG) divisible by 31. With one
      // byte only, assume zlib if CM = 8 (raw deflate's first byte rarely looks like that).
      const zlibWrapped =
        (first[0] & 0x0f) === 8 && (first.byteLength < 2 || ((first[0] << 8) | first[1]) % 31 === 0);
      z = zlibWrapped ? zlib.createInflate(flush) : zlib.createInflateRaw(flush);
    }
    z.on('data', (c: Buffer) => this.deliver(c));
    z.on('error', (err: Error) => {
      if (this.done) return;
      this.error = `corrupt ${this.coding} body: ${err.message}`;
      this.settle();
    });
    z.on('end', () => this.settle());
    z.on('close', () => this.settle());
    return z;
  }
}

/** Decodes a whole body (test and tooling convenience); bounded like BodyDecoder. */
export async function decodeBody(
  contentEncoding: string | undefined,
  chunks: Iterable<Uint8Array>,
  opts?: BodyDecoderOptions,
): Promise<{ body: Buffer } & DecodeResult> {
  const out: Buffer[] = [];
  const d = new BodyDecoder(contentEncoding, (c) => out.push(Buffer.from(c)), opts);
  for (const c of chunks) d.write(c);
  const r = await d.end();
  return { body: Buffer.concat(out), ...r };
}
