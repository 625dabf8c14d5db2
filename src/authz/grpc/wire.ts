/**
 * A lean codec for the one hot RPC: CheckRequest bytes → CheckInput, and Decision → CheckResponse
 * bytes, without building proto-loader's object graph (peers, timestamps, every header as an object
 * field) only to copy five fields out of it and without building a second one for the answer.
 *
 * It reads only what tollgate uses — attributes.request.http {method, headers, path, body, raw_body,
 * header_map} and attributes.metadata_context.filter_metadata — and skips every other field by its
 * wire type, as any protobuf parser skips unknown fields. Field numbers are Envoy's (the vendored
 * protos in proto/, themselves checked against Envoy's official definitions). test/wire.test.ts proves
 * both directions equal the proto-loader path (toCheckInput / toCheckResponse in translate.ts, which
 * remain the readable reference) on generated requests and decisions.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import type { CheckInput, Decision, Headers } from '../../decision/types.js';
import { rpcFor } from './translate.js';

/** Struct/ListValue nesting beyond this is dropped (as structToJson does). */
const MAX_DEPTH = 32;

class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const b = this.buf[this.pos++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    throw new Error('varint too long');
  }

  /** End offset of a length-delimited field whose length prefix is at pos. */
  lengthEnd(): number {
    const len = this.varint();
    const e = this.pos + len;
    if (e > this.end) throw new Error('truncated field');
    return e;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.lengthEnd();
        return;
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new Error('truncated field');
  }

  string(): string {
    const e = this.lengthEnd();
    const s = this.buf.toString('utf8', this.pos, e);
    this.pos = e;
    return s;
  }

  bytes(): Buffer {
    const e = this.lengthEnd();
    const b = this.buf.subarray(this.pos, e);
    this.pos = e;
    return b;
  }

  double(): number {
    if (this.pos + 8 > this.end) throw new Error('truncated double');
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
}

/** Run `fn(field, wireType)` for each field of the message in [r.pos, end). */
function fields(r: Reader, end: number, fn: (field: number, wireType: number) => void): void {
  while (r.pos < end) {
    const tag = r.varint();
    const before = r.pos;
    fn(tag >>> 3, tag & 7);
    if (r.pos === before) r.skip(tag & 7); // fn did not consume it
  }
  if (r.pos !== end) throw new Error('field overruns its message');
}

/** A map<string, V> entry: key = 1, value = 2 (read by `readValue`; `empty` when absent). */
function mapEntry<V>(r: Reader, readValue: (r: Reader, end: number) => V, empty: V): [string, V] {
  const end = r.lengthEnd();
  let key = '';
  let value = empty;
  fields(r, end, (f, wt) => {
    if (f === 1 && wt === 2) key = r.string();
    else if (f === 2 && wt === 2) value = readValue(r, r.lengthEnd());
  });
  r.pos = end;
  return [key, value];
}

/**
 * google.protobuf.Value at `depth` → JSON (null for null_value or no kind; undefined past MAX_DEPTH).
 * Depths follow structToJson/valueToJson in translate.ts exactly.
 */
function readValue(r: Reader, end: number, depth: number): unknown {
  if (depth > MAX_DEPTH) {
    r.pos = end;
    return undefined;
  }
  let out: unknown = null;
  fields(r, end, (f, wt) => {
    if (f === 2 && wt === 1) out = r.double();
    else if (f === 3 && wt === 2) out = r.string();
    else if (f === 4 && wt === 0) out = r.varint() !== 0;
    else if (f === 5 && wt === 2) out = readStruct(r, r.lengthEnd(), depth + 1);
    else if (f === 6 && wt === 2) out = readList(r, r.lengthEnd(), depth);
    else if (f === 1 && wt === 0) {
      r.varint();
      out = null;
    }
  });
  return out;
}

function readList(r: Reader, end: number, depth: number): unknown[] {
  const out: unknown[] = [];
  fields(r, end, (f, wt) => {
    if (f === 1 && wt === 2) out.push(readValue(r, r.lengthEnd(), depth + 1));
  });
  return out;
}

/** google.protobuf.Struct → plain JSON object (undefined past MAX_DEPTH). */
function readStruct(r: Reader, end: number, depth: number): Record<string, unknown> | undefined {
  if (depth > MAX_DEPTH) {
    r.pos = end;
    return undefined;
  }
  const out: Record<string, unknown> = {};
  fields(r, end, (f, wt) => {
    if (f === 1 && wt === 2) {
      const [k, v] = mapEntry(r, (rr, e) => readValue(rr, e, depth + 1), undefined as unknown);
      out[k] = v;
    }
  });
  return out;
}

interface HttpFields {
  method?: string;
  path?: string;
  headers: Record<string, string>;
  headerCount: number;
  rawHeaders?: Record<string, string>;
  body?: string;
  rawBody?: Buffer;
}

function readHttp(r: Reader, end: number, h: HttpFields): void {
  fields(r, end, (f, wt) => {
    if (wt !== 2) return;
    switch (f) {
      case 2:
        h.method = r.string();
        break;
      case 3: {
        // map<string, string> entry { key = 1; value = 2 }, read inline: ~10 per request
        const end = r.lengthEnd();
        let key = '';
        let value = '';
        while (r.pos < end) {
          const tag = r.varint();
          if (tag === 10) key = r.string();
          else if (tag === 18) value = r.string();
          else r.skip(tag & 7);
        }
        if (r.pos !== end) throw new Error('field overruns its message');
        h.headers[key.toLowerCase()] = value;
        h.headerCount++;
        break;
      }
      case 4:
        h.path = r.string();
        break;
      case 11:
        h.body = r.string();
        break;
      case 12:
        h.rawBody = r.bytes();
        break;
      case 13: {
        // HeaderMap { repeated HeaderValue headers = 1 }; HeaderValue { key = 1, value = 2, raw_value = 3 }
        const mapEnd = r.lengthEnd();
        const raw = h.rawHeaders ?? {};
        h.rawHeaders = raw;
        fields(r, mapEnd, (hf, hwt) => {
          if (hf !== 1 || hwt !== 2) return;
          const hvEnd = r.lengthEnd();
          let key = '';
          let value = '';
          let rawValue: Buffer | undefined;
          fields(r, hvEnd, (vf, vwt) => {
            if (vwt !== 2) return;
            if (vf === 1) key = r.string();
            else if (vf === 2) value = r.string();
            else if (vf === 3) rawValue = r.bytes();
          });
          raw[key.toLowerCase()] = value || (rawValue ? rawValue.toString('utf8') : '');
        });
        break;
      }
    }
  });
}

/**
 * CheckRequest bytes → CheckInput (same result as toCheckInput on the proto-loader object). Throws on
 * malformed protobuf; grpc-js answers such a call with an error status, as with any bad message.
 */
export function decodeCheckInput(buf: Buffer): CheckInput {
  const r = new Reader(buf, 0, buf.length);
  const http: HttpFields = { headers: {}, headerCount: 0 };
  let metadata: Record<string, unknown> | undefined;
  let sourceAddress: string | undefined;
  fields(r, buf.length, (f, wt) => {
    if (f !== 1 || wt !== 2) return; // attributes
    const aEnd = r.lengthEnd();
    fields(r, aEnd, (af, awt) => {
      if (awt !== 2) return;
      if (af === 1) {
        // source (Peer) { address = 1 (Address { socket_address = 1 (SocketAddress { address = 2 }) }) }
        const v = readSourceAddress(r, r.lengthEnd());
        if (v) sourceAddress = v;
      } else if (af === 4) {
        // request { time = 1; http = 2 }
        const rqEnd = r.lengthEnd();
        fields(r, rqEnd, (qf, qwt) => {
          if (qf === 2 && qwt === 2) readHttp(r, r.lengthEnd(), http);
        });
      } else if (af === 11) {
        // metadata_context { filter_metadata = 1 (map<string, Struct>) }
        const mEnd = r.lengthEnd();
        fields(r, mEnd, (mf, mwt) => {
          if (mf !== 1 || mwt !== 2) return;
          const [ns, s] = mapEntry(
            r,
            (rr, e) => readStruct(rr, e, 0),
            {} as Record<string, unknown> | undefined,
          );
          metadata ??= {};
          metadata[ns] = s ?? {};
        });
      }
    });
  });
  const headers = http.headerCount > 0 ? http.headers : (http.rawHeaders ?? {});
  const body =
    http.rawBody && http.rawBody.length > 0
      ? http.rawBody
      : http.body !== undefined && http.body.length > 0
        ? http.body
        : undefined;
  const input: CheckInput = {
    method: http.method ?? headers[':method'] ?? '',
    path: http.path ?? headers[':path'] ?? '',
    headers,
    body,
    metadata,
  };
  if (sourceAddress) input.sourceAddress = sourceAddress;
  return input;
}

/** attributes.source.address.socket_address.address, if present. */
function readSourceAddress(r: Reader, end: number): string | undefined {
  let out: string | undefined;
  const nested = (e: number, field: number, inner: (e2: number) => void) =>
    fields(r, e, (f, wt) => {
      if (f === field && wt === 2) inner(r.lengthEnd());
    });
  nested(end, 1, (addrEnd) =>
    nested(addrEnd, 1, (sockEnd) =>
      fields(r, sockEnd, (f, wt) => {
        if (f === 2 && wt === 2) out = r.string();
      }),
    ),
  );
  return out;
}

// ---- encoding -----------------------------------------------------------------------------------

/** Growable output buffer with protobuf primitives; nested messages are length-patched. */
class Writer {
  buf = Buffer.allocUnsafe(1024);
  /** `pos`: bytes reserved at the start (5 for a gRPC frame header, see encodeCheckResponse). */
  constructor(public pos = 0) {}

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint(v: number): void {
    this.ensure(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  string(field: number, s: string): void {
    this.tag(field, 2);
    this.raw(s, Buffer.byteLength(s));
  }

  /** Length prefix and UTF-8 bytes of `s`, whose byte length `n` the caller knows. */
  raw(s: string, n: number): void {
    this.varint(n);
    this.ensure(n);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  /** Start a length-delimited field: reserve 4 bytes for its length (written by end()). */
  begin(field: number): number {
    this.tag(field, 2);
    this.ensure(4);
    const at = this.pos;
    this.pos += 4;
    return at;
  }

  /** Write the length of the field begun at `at` as a minimal varint, moving the content back. */
  end(at: number): void {
    const len = this.pos - at - 4;
    if (len >= 1 << 28) throw new Error('message too large');
    const n = len < 0x80 ? 1 : len < 0x4000 ? 2 : len < 0x200000 ? 3 : 4;
    if (n < 4) this.buf.copy(this.buf, at + n, at + 4, this.pos);
    this.pos -= 4 - n;
    let v = len;
    for (let i = 0; i < n - 1; i++) {
      this.buf[at + i] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[at + n - 1] = v;
  }

  result(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  /** The bytes after 5 reserved ones, framed as one gRPC message (flag 0, big-endian length). */
  framed(): Buffer {
    this.buf[0] = 0;
    this.buf.writeUInt32BE(this.pos - 5, 1);
    return this.buf.subarray(0, this.pos);
  }
}

/**
 * HeaderValueOption.HeaderAppendAction (envoy/config/core/v3/base.proto). Upstream request headers and
 * deny headers overwrite (tollgate's x-tollgate-model must replace a client's; a deny is tollgate's own
 * reply). Headers for the client's response on an allow are ADD_IF_ABSENT: ext_authz applies
 * response_headers_to_add to whatever the provider answers, its 429s and 5xx included, and the
 * provider's own x-ratelimit-* must win over tollgate's (docs/envoy-and-istio.md, "Response headers").
 */
const ADD_IF_ABSENT = 1;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;

function varintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

/**
 * repeated HeaderValueOption { header = 1 { key = 1; value = 2 }; append_action = 3 }, with the
 * lengths computed up front (the bulk of every answer; no back-patching).
 */
function headerOptions(w: Writer, field: number, h: Headers, action = OVERWRITE_IF_EXISTS_OR_ADD): void {
  for (const key in h) {
    const value = h[key];
    const kl = Buffer.byteLength(key);
    const vl = Buffer.byteLength(value);
    const hvLen = 1 + varintSize(kl) + kl + 1 + varintSize(vl) + vl;
    w.tag(field, 2);
    w.varint(1 + varintSize(hvLen) + hvLen + 2);
    w.tag(1, 2);
    w.varint(hvLen);
    w.tag(1, 2);
    w.raw(key, kl);
    w.tag(2, 2);
    w.raw(value, vl);
    w.tag(3, 0);
    w.varint(action);
  }
}

/**
 * Decision → CheckResponse bytes (same message as toCheckResponse, encoded). `framed`: as one gRPC
 * message frame (5-byte header first), ready to write to an HTTP/2 stream (src/authz/grpc/direct.ts).
 */
export function encodeCheckResponse(d: Decision, framed = false): Buffer {
  const w = new Writer(framed ? 5 : 0);
  if (d.kind === 'allow') {
    const st = w.begin(1); // status {} (code 0)
    w.end(st);
    const ok = w.begin(3);
    headerOptions(w, 2, d.upstreamHeaders);
    for (const name of d.removeHeaders) w.string(5, name);
    headerOptions(w, 6, d.responseHeaders, ADD_IF_ABSENT);
    w.end(ok);
    return framed ? w.framed() : w.result();
  }
  const st = w.begin(1);
  w.tag(1, 0);
  w.varint(rpcFor(d.httpStatus));
  if (d.reason) w.string(2, d.reason);
  w.end(st);
  const den = w.begin(2);
  const hs = w.begin(1);
  w.tag(1, 0);
  w.varint(d.httpStatus);
  w.end(hs);
  headerOptions(w, 2, d.headers);
  if (d.body) w.string(3, d.body);
  w.end(den);
  return framed ? w.framed() : w.result();
}

/**
 * The Authorization service definition with the lean codec on Check: handlers receive a CheckInput
 * (already translated) and answer with the bytes of encodeCheckResponse. Health and the proto
 * definitions are untouched; clients are unaffected (the wire format is the same).
 */
export function leanAuthorization(def: ServiceDefinition): ServiceDefinition {
  const check = def.Check;
  if (!check) throw new Error('tollgate: Authorization service has no Check method');
  return {
    ...def,
    Check: {
      ...check,
      requestDeserialize: decodeCheckInput,
      responseSerialize: (bytes: Buffer) => bytes,
    },
  };
}
