/**
 * A hand-written codec for ext_proc's Process stream (the direct path, direct-process.ts):
 * ProcessingRequest bytes → the plain object proto-loader gives with LOADER_OPTIONS (protos.ts), and
 * the empty "continue" ProcessingResponse of each kind pre-encoded as a gRPC message frame.
 *
 * The decoded object is the one grpc-js hands extProcHandler (src/settle/messages.ts
 * ExtProcProcessingRequest), field for field: snake_case names, a virtual `request` naming the set
 * oneof member (the highest-numbered one when several are on the wire, as protobufjs), bytes as
 * Buffers (views on the input, as protobufjs), absent scalars absent, empty repeated and map fields
 * as [] and {}, a message field sent twice replaced by the last (protobufjs does not merge), and
 * google.protobuf.Struct values with protobufjs' camelCase kinds and `kind`. Every field of the
 * vendored protos (proto/envoy/service/ext_proc/v3/external_processor.proto, config/core/v3/base.proto
 * HeaderMap/HeaderValue/Metadata, google/protobuf/struct.proto) is read; unknown fields are skipped by
 * wire type (groups included); a known field with another wire type is skipped too (protobufjs would
 * misread it). test/ext-proc-wire.test.ts proves equality with proto-loader on generated messages.
 *
 * Differences only where proto-loader fails: a map entry without its message value decodes as the
 * empty message (protobufjs throws a TypeError on it).
 *
 * The reader (varints, lengths, skipping unknown fields and groups) is proto-reader.ts, shared with
 * wire.ts. Malformed input (truncated varints or fields, bad wire types, nesting past protobufjs' 100)
 * throws a ProtoDecodeError and nothing else; decoding is linear in the input.
 */
import type {
  DecodedStruct,
  DecodedValue,
  ExtProcHeaderValue,
  ExtProcProcessingRequest,
} from '../../settle/messages.js';
import { MAX_DEPTH, ProtoDecodeError, ProtoReader } from './proto-reader.js';

export { ProtoDecodeError } from './proto-reader.js';

type Kind = NonNullable<ExtProcProcessingRequest['request']>;
/** ProcessingRequest's oneof `request`, by field number (2..7). */
const KINDS: (Kind | undefined)[] = [
  undefined,
  undefined,
  'request_headers',
  'response_headers',
  'request_body',
  'response_body',
  'request_trailers',
  'response_trailers',
];

/** Set `obj[key] = value` as an own property, `__proto__` included (as protobufjs' makeProp). */
function put<V>(obj: Record<string, V>, key: string, value: V): void {
  if (key === '__proto__')
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  else obj[key] = value;
}

/** A map<string, M> entry at pos: key = 1, value = 2 (read by `value`; `empty()` when absent). */
function mapEntry<M>(
  r: ProtoReader,
  into: Record<string, M>,
  depth: number,
  value: (r: ProtoReader, depth: number) => M,
  empty: () => M,
): void {
  const outer = r.enter();
  let key = '';
  let v: M | undefined;
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) key = r.string();
    else if (t === 18) {
      const o = r.enter();
      v = value(r, depth + 1);
      r.leave(o);
    } else r.skip(t & 7, depth);
  }
  r.leave(outer);
  put(into, key, v ?? empty());
}

const emptyStruct = (): DecodedStruct => ({ fields: {} });

/** google.protobuf.Struct in [pos, end). */
function struct(r: ProtoReader, depth: number): DecodedStruct {
  if (depth > MAX_DEPTH) throw new ProtoDecodeError('maximum nesting depth exceeded');
  const fields: Record<string, DecodedValue> = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) mapEntry(r, fields, depth, value, () => ({}));
    else r.skip(t & 7, depth);
  }
  return { fields };
}

/** google.protobuf.Value in [pos, end). */
function value(r: ProtoReader, depth: number): DecodedValue {
  if (depth > MAX_DEPTH) throw new ProtoDecodeError('maximum nesting depth exceeded');
  const v: DecodedValue = {};
  let kindField = 0;
  while (r.pos < r.end) {
    const t = r.u32();
    const f = t >>> 3;
    switch (t) {
      case 8: {
        const n = r.u32() | 0;
        v.nullValue = (n === 0 ? 'NULL_VALUE' : n) as string; // an unknown enum number stays a number
        break;
      }
      case 17:
        v.numberValue = r.double();
        break;
      case 26:
        v.stringValue = r.string();
        break;
      case 32:
        v.boolValue = r.u32() !== 0;
        break;
      case 42: {
        const o = r.enter();
        v.structValue = struct(r, depth + 1);
        r.leave(o);
        break;
      }
      case 50: {
        const o = r.enter();
        v.listValue = list(r, depth + 1);
        r.leave(o);
        break;
      }
      default:
        r.skip(t & 7, depth);
        continue;
    }
    if (f > kindField) kindField = f;
  }
  if (kindField > 0) v.kind = VALUE_KINDS[kindField];
  return v;
}
const VALUE_KINDS = ['', 'nullValue', 'numberValue', 'stringValue', 'boolValue', 'structValue', 'listValue'];

/** google.protobuf.ListValue in [pos, end). */
function list(r: ProtoReader, depth: number): { values: DecodedValue[] } {
  if (depth > MAX_DEPTH) throw new ProtoDecodeError('maximum nesting depth exceeded');
  const values: DecodedValue[] = [];
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      values.push(value(r, depth + 1));
      r.leave(o);
    } else r.skip(t & 7, depth);
  }
  return { values };
}

/** config.core.v3.HeaderMap in [pos, end): headers = 1 (HeaderValue { key 1, value 2, raw_value 3 }). */
function headerMap(r: ProtoReader, depth: number): { headers: ExtProcHeaderValue[] } {
  const headers: ExtProcHeaderValue[] = [];
  while (r.pos < r.end) {
    const t = r.u32();
    if (t !== 10) {
      r.skip(t & 7, depth);
      continue;
    }
    const o = r.enter();
    const hv = {} as ExtProcHeaderValue;
    while (r.pos < r.end) {
      const ht = r.u32();
      if (ht === 10) hv.key = r.string();
      else if (ht === 18) hv.value = r.string();
      else if (ht === 26) hv.raw_value = r.bytes();
      else r.skip(ht & 7, depth + 1);
    }
    r.leave(o);
    headers.push(hv);
  }
  return { headers };
}

/** Decoded ProcessingRequest member messages (HttpHeaders, HttpBody, HttpTrailers). */
type Member = Record<string, unknown>;

/** HttpHeaders { headers 1, attributes 2 (map<string, Struct>), end_of_stream 3 }. */
function httpHeaders(r: ProtoReader, depth: number): Member {
  const attributes: Record<string, DecodedStruct> = {};
  const m: Member = { attributes };
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      m.headers = headerMap(r, depth + 1);
      r.leave(o);
    } else if (t === 18) mapEntry(r, attributes, depth, struct, emptyStruct);
    else if (t === 24) m.end_of_stream = r.u32() !== 0;
    else r.skip(t & 7, depth);
  }
  return m;
}

/** HttpBody { body 1, end_of_stream 2 }. */
function httpBody(r: ProtoReader, depth: number): Member {
  const m: Member = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) m.body = r.bytes();
    else if (t === 16) m.end_of_stream = r.u32() !== 0;
    else r.skip(t & 7, depth);
  }
  return m;
}

/** HttpTrailers { trailers 1 }. */
function httpTrailers(r: ProtoReader, depth: number): Member {
  const m: Member = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      m.trailers = headerMap(r, depth + 1);
      r.leave(o);
    } else r.skip(t & 7, depth);
  }
  return m;
}

/** config.core.v3.Metadata { filter_metadata 1 (map<string, Struct>), typed_filter_metadata 2 (Any) }. */
function metadata(r: ProtoReader, depth: number): Member {
  const filter: Record<string, DecodedStruct> = {};
  const typed: Record<string, Member> = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) mapEntry(r, filter, depth, struct, emptyStruct);
    else if (t === 18) mapEntry(r, typed, depth, any, () => ({}));
    else r.skip(t & 7, depth);
  }
  return { filter_metadata: filter, typed_filter_metadata: typed };
}

/** google.protobuf.Any { type_url 1, value 2 }. */
function any(r: ProtoReader, depth: number): Member {
  const m: Member = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) m.type_url = r.string();
    else if (t === 18) m.value = r.bytes();
    else r.skip(t & 7, depth);
  }
  return m;
}

const MEMBER_READERS = [
  undefined,
  undefined,
  httpHeaders,
  httpHeaders,
  httpBody,
  httpBody,
  httpTrailers,
  httpTrailers,
];

/**
 * ProcessingRequest bytes buf[start, end) → the object proto-loader decodes. Throws ProtoDecodeError
 * on malformed input.
 */
export function decodeProcessingRequest(buf: Buffer, start = 0, end = buf.length): ExtProcProcessingRequest {
  const r = new ProtoReader(buf, start, end);
  const attributes: Record<string, DecodedStruct> = {};
  const m: Record<string, unknown> = { attributes };
  let kindField = 0;
  while (r.pos < r.end) {
    const t = r.u32();
    const f = t >>> 3;
    if ((t & 7) === 2 && f >= 2 && f <= 7) {
      const o = r.enter();
      m[KINDS[f]!] = MEMBER_READERS[f]!(r, 1);
      r.leave(o);
      if (f > kindField) kindField = f;
    } else if (t === 66) {
      const o = r.enter();
      m.metadata_context = metadata(r, 1);
      r.leave(o);
    } else if (t === 74) mapEntry(r, attributes, 0, struct, emptyStruct);
    else if (t === 80) m.observability_mode = r.u32() !== 0;
    else r.skip(t & 7, 0);
  }
  if (kindField > 0) m.request = KINDS[kindField];
  return m as ExtProcProcessingRequest;
}

/** One gRPC message frame (uncompressed) holding `message`. */
function frame(message: number[]): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out.writeUInt32BE(message.length, 1);
  Buffer.from(message).copy(out, 5);
  return out;
}

/**
 * The empty "continue" ProcessingResponse of each kind (messages.ts continueResponse), as gRPC
 * frames: HeadersResponse/BodyResponse { response: CommonResponse {} } for headers and bodies (field
 * 1..4, holding field 1 of length 0), TrailersResponse {} for trailers (field 5, 6).
 */
export const CONTINUE_FRAMES: Readonly<Record<Kind, Buffer>> = {
  request_headers: frame([0x0a, 2, 0x0a, 0]),
  response_headers: frame([0x12, 2, 0x0a, 0]),
  request_body: frame([0x1a, 2, 0x0a, 0]),
  response_body: frame([0x22, 2, 0x0a, 0]),
  request_trailers: frame([0x2a, 0]),
  response_trailers: frame([0x32, 0]),
};
