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
import type { CheckInput } from '../../decision/types.js';

export { encodeCheckResponse } from './wire-encode.js';

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
