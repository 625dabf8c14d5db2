/**
 * The lean codec's answer side: Decision → CheckResponse bytes, written directly (no proto-loader
 * object graph), optionally already framed for the direct Check path. test/wire.test.ts proves the
 * bytes equal the proto-loader path's (translate.ts); test/proto-compat.test.ts reads them back with
 * Envoy's official protos.
 */

import { eachMetadataField, type MetadataSink } from '../../decision/metadata.js';
import type { Decision, Headers } from '../../decision/types.js';
import { rpcFor } from './translate.js';

/** Growable output buffer with protobuf primitives; nested messages are length-patched. */
class Writer implements MetadataSink {
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

  /**
   * One Struct.fields map entry { key = 1; value = 2 { string_value = 3 } }, lengths computed up front
   * (no back-patching: the metadata is on every answer).
   */
  str(key: string, value: string): void {
    const kl = Buffer.byteLength(key);
    const vl = Buffer.byteLength(value);
    const valueLen = 1 + varintSize(vl) + vl;
    this.tag(1, 2);
    this.varint(1 + varintSize(kl) + kl + 1 + varintSize(valueLen) + valueLen);
    this.tag(1, 2);
    this.raw(key, kl);
    this.tag(2, 2);
    this.varint(valueLen);
    this.tag(3, 2);
    this.raw(value, vl);
  }

  /** One map entry { key = 1; value = 2 { number_value = 2 (double) } }. */
  num(key: string, value: number): void {
    const kl = Buffer.byteLength(key);
    this.tag(1, 2);
    this.varint(1 + varintSize(kl) + kl + 1 + 1 + 9);
    this.tag(1, 2);
    this.raw(key, kl);
    this.tag(2, 2);
    this.varint(9);
    this.double(2, value);
  }

  /** A double field (wire type 1, little-endian). */
  double(field: number, v: number): void {
    this.tag(field, 1);
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
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
    dynamicMetadata(w, d);
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
  dynamicMetadata(w, d);
  return framed ? w.framed() : w.result();
}

/**
 * dynamic_metadata = 4: Struct { map<string, Value> fields = 1 }, each entry { key = 1; value = 2 },
 * Value.number_value = 2 (double), string_value = 3 (decision/metadata.ts gives the fields).
 */
function dynamicMetadata(w: Writer, d: Decision): void {
  const dm = w.begin(4);
  eachMetadataField(d, w); // Writer.str / Writer.num
  w.end(dm);
}
