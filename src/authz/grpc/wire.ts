/**
 * A lean codec for the one hot RPC: CheckRequest bytes → CheckInput, and Decision → CheckResponse
 * bytes, without building proto-loader's object graph (peers, timestamps, every header as an object
 * field) only to copy five fields out of it and without building a second one for the answer.
 *
 * It reads only what tollgate uses — attributes.source's address, attributes.request.http {method,
 * headers, path, body, raw_body, header_map} and attributes.metadata_context.filter_metadata — and
 * skips every other field by its wire type (groups included), as protobufjs skips unknown fields.
 * The reader (varints, lengths, skipping, ProtoDecodeError) is proto-reader.ts, shared with
 * ext-proc-wire.ts; the decoding here is plain loops over each message's tags (no closures). Field
 * numbers are Envoy's (the vendored protos in proto/, themselves checked against Envoy's official
 * definitions). test/wire.test.ts proves both directions equal the proto-loader path (toCheckInput /
 * toCheckResponse in translate.ts, which remain the readable reference) on generated requests and
 * decisions.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import type { CheckInput } from '../../decision/types.js';
import { ProtoReader } from './proto-reader.js';

export { ProtoDecodeError } from './proto-reader.js';
export { encodeCheckResponse } from './wire-encode.js';

/** Struct/ListValue nesting beyond this is dropped (as structToJson does). */
const JSON_DEPTH = 32;

/**
 * What decodeCheckInput gathers from a CheckRequest (one per call, every field set in the constructor:
 * one shape). A message sent twice adds to it (http fields, headers, metadata namespaces).
 */
class CheckFields {
  method: string | undefined = undefined;
  path: string | undefined = undefined;
  headers: Record<string, string> = {};
  headerCount = 0;
  rawHeaders: Record<string, string> | undefined = undefined;
  body: string | undefined = undefined;
  rawBody: Buffer | undefined = undefined;
  metadata: Record<string, unknown> | undefined = undefined;
  sourceAddress: string | undefined = undefined;
}

// Each reader below reads the message in [r.pos, r.end) and skips what it does not read at the
// message's nesting depth `md` as protobufjs counts it (CheckRequest 0, map entries at their parent's).

/**
 * google.protobuf.Value at `depth` → JSON (null for null_value or no kind; undefined past JSON_DEPTH).
 * Depths follow structToJson/valueToJson in translate.ts exactly.
 */
function readValue(r: ProtoReader, depth: number, md: number): unknown {
  if (depth > JSON_DEPTH) {
    r.pos = r.end;
    return undefined;
  }
  let out: unknown = null;
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 17) out = r.double();
    else if (t === 26) out = r.string();
    else if (t === 32) out = r.u32() !== 0;
    else if (t === 42 || t === 50) {
      const o = r.enter();
      out = t === 42 ? readStruct(r, depth + 1, md + 1) : readList(r, depth, md + 1);
      r.leave(o);
    } else if (t === 8) {
      r.u32();
      out = null;
    } else r.skip(t & 7, md);
  }
  return out;
}

function readList(r: ProtoReader, depth: number, md: number): unknown[] {
  const out: unknown[] = [];
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      out.push(readValue(r, depth + 1, md + 1));
      r.leave(o);
    } else r.skip(t & 7, md);
  }
  return out;
}

/** google.protobuf.Struct → plain JSON object (undefined past JSON_DEPTH). */
function readStruct(r: ProtoReader, depth: number, md: number): Record<string, unknown> | undefined {
  if (depth > JSON_DEPTH) {
    r.pos = r.end;
    return undefined;
  }
  const out: Record<string, unknown> = {};
  while (r.pos < r.end) {
    const t = r.u32();
    if (t !== 10) {
      r.skip(t & 7, md);
      continue;
    }
    // map<string, Value> entry { key = 1; value = 2 }
    const o = r.enter();
    let key = '';
    let value: unknown;
    while (r.pos < r.end) {
      const et = r.u32();
      if (et === 10) key = r.string();
      else if (et === 18) {
        const o2 = r.enter();
        value = readValue(r, depth + 1, md + 1);
        r.leave(o2);
      } else r.skip(et & 7, md);
    }
    r.leave(o);
    out[key] = value;
  }
  return out;
}

/** HttpRequest (md 3): method 2, headers 3, path 4, body 11, raw_body 12, header_map 13. */
function readHttp(r: ProtoReader, d: CheckFields): void {
  while (r.pos < r.end) {
    const t = r.u32();
    switch (t) {
      case 18:
        d.method = r.string();
        break;
      case 26: {
        // map<string, string> entry { key = 1; value = 2 }, read inline: ~10 per request
        const o = r.enter();
        let key = '';
        let value = '';
        while (r.pos < r.end) {
          const et = r.u32();
          if (et === 10) key = r.string();
          else if (et === 18) value = r.string();
          else r.skip(et & 7, 3);
        }
        r.leave(o);
        d.headers[key.toLowerCase()] = value;
        d.headerCount++;
        break;
      }
      case 34:
        d.path = r.string();
        break;
      case 90:
        d.body = r.string();
        break;
      case 98:
        d.rawBody = r.bytes();
        break;
      case 106: {
        const o = r.enter();
        readHeaderMap(r, d);
        r.leave(o);
        break;
      }
      default:
        r.skip(t & 7, 3);
    }
  }
}

/** HeaderMap (md 4) { repeated HeaderValue headers = 1 }; HeaderValue { key 1, value 2, raw_value 3 }. */
function readHeaderMap(r: ProtoReader, d: CheckFields): void {
  const raw = d.rawHeaders ?? {};
  d.rawHeaders = raw;
  while (r.pos < r.end) {
    const t = r.u32();
    if (t !== 10) {
      r.skip(t & 7, 4);
      continue;
    }
    const o = r.enter();
    let key = '';
    let value = '';
    let rawValue: Buffer | undefined;
    while (r.pos < r.end) {
      const vt = r.u32();
      if (vt === 10) key = r.string();
      else if (vt === 18) value = r.string();
      else if (vt === 26) rawValue = r.bytes();
      else r.skip(vt & 7, 5);
    }
    r.leave(o);
    raw[key.toLowerCase()] = value || (rawValue ? rawValue.toString('utf8') : '');
  }
}

/** AttributeContext (md 1): source 1, request 4 (its http 2), metadata_context 11. */
function readAttributes(r: ProtoReader, d: CheckFields): void {
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      const v = readSourceAddress(r, 2);
      if (v) d.sourceAddress = v;
      r.leave(o);
    } else if (t === 34) {
      // request (md 2) { time = 1; http = 2 }
      const o = r.enter();
      while (r.pos < r.end) {
        const qt = r.u32();
        if (qt === 18) {
          const o2 = r.enter();
          readHttp(r, d);
          r.leave(o2);
        } else r.skip(qt & 7, 2);
      }
      r.leave(o);
    } else if (t === 90) {
      const o = r.enter();
      readMetadata(r, d);
      r.leave(o);
    } else r.skip(t & 7, 1);
  }
}

/** Metadata (md 2) { filter_metadata = 1 (map<string, Struct>) }. */
function readMetadata(r: ProtoReader, d: CheckFields): void {
  while (r.pos < r.end) {
    const t = r.u32();
    if (t !== 10) {
      r.skip(t & 7, 2);
      continue;
    }
    const o = r.enter();
    let ns = '';
    let s: Record<string, unknown> | undefined;
    while (r.pos < r.end) {
      const et = r.u32();
      if (et === 10) ns = r.string();
      else if (et === 18) {
        const o2 = r.enter();
        s = readStruct(r, 0, 3);
        r.leave(o2);
      } else r.skip(et & 7, 2);
    }
    r.leave(o);
    d.metadata ??= {};
    d.metadata[ns] = s ?? {};
  }
}

/**
 * attributes.source's address, if present: Peer (md 2) → address 1 (Address, md 3) → socket_address 1
 * (SocketAddress, md 4) → address 2; the last one on the wire.
 */
function readSourceAddress(r: ProtoReader, md: number): string | undefined {
  let out: string | undefined;
  while (r.pos < r.end) {
    const t = r.u32();
    if (md === 4 && t === 18) out = r.string();
    else if (md < 4 && t === 10) {
      const o = r.enter();
      const v = readSourceAddress(r, md + 1);
      r.leave(o);
      if (v !== undefined) out = v;
    } else r.skip(t & 7, md);
  }
  return out;
}

/**
 * CheckRequest bytes → CheckInput (same result as toCheckInput on the proto-loader object). Throws
 * ProtoDecodeError on malformed protobuf; grpc-js (and the direct path, server.ts) answer such a call
 * with INTERNAL, as for any message that cannot be deserialized.
 */
export function decodeCheckInput(buf: Buffer): CheckInput {
  const r = new ProtoReader(buf, 0, buf.length);
  const d = new CheckFields();
  while (r.pos < r.end) {
    const t = r.u32();
    if (t === 10) {
      const o = r.enter();
      readAttributes(r, d);
      r.leave(o);
    } else r.skip(t & 7, 0);
  }
  const headers = d.headerCount > 0 ? d.headers : (d.rawHeaders ?? {});
  const body =
    d.rawBody && d.rawBody.length > 0
      ? d.rawBody
      : d.body !== undefined && d.body.length > 0
        ? d.body
        : undefined;
  const input: CheckInput = {
    method: d.method ?? headers[':method'] ?? '',
    path: d.path ?? headers[':path'] ?? '',
    headers,
    body,
    metadata: d.metadata,
  };
  if (d.sourceAddress) input.sourceAddress = d.sourceAddress;
  return input;
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
