/**
 * The protobuf reader of tollgate's two hand-written decoders: wire.ts (CheckRequest, the hot Check
 * path) and ext-proc-wire.ts (ext_proc's ProcessingRequest). It reads as protobufjs (what grpc-js and
 * proto-loader use) reads: tags and lengths as uint32 (a longer varint is read and cut to its low 32
 * bits, though one over 10 bytes is an error), a length-delimited message read within its bounds
 * (enter/leave narrow `end` as protobufjs narrows `len`), unknown fields skipped by wire type, groups
 * (wire types 3/4) included, and nesting past protobufjs' recursion limit an error.
 *
 * Malformed input (truncated varints or fields, bad wire types, nesting too deep) throws a
 * ProtoDecodeError and nothing else; every caller answers it as grpc-js answers a message it cannot
 * deserialize (INTERNAL, 'Error deserializing request').
 */

export class ProtoDecodeError extends Error {}

/** protobufjs' (and protoc's) recursion limit: messages and groups nested deeper are an error. */
export const MAX_DEPTH = 100;

/**
 * A cursor over buf[pos, end): `end` is the end of the message being read (enter/leave move it). The
 * decoders loop `while (r.pos < r.end)` over a message's tags and `skip` those they do not read.
 */
export class ProtoReader {
  pos: number;
  end: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    end: number,
  ) {
    this.pos = start;
    this.end = end;
  }

  /** A varint's low 32 bits, unsigned (protobufjs' uint32: a longer varint is read and cut). */
  u32(): number {
    const buf = this.buf;
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtoDecodeError('truncated varint');
      const b = buf[this.pos++];
      if (i < 5) v = (v | ((b & 0x7f) << (7 * i))) >>> 0;
      if (b < 0x80) return v;
    }
    throw new ProtoDecodeError('varint too long');
  }

  /** The end offset of a length-delimited field whose length is at pos. */
  len(): number {
    const n = this.u32();
    const e = this.pos + n;
    if (e > this.end) throw new ProtoDecodeError('truncated field');
    return e;
  }

  string(): string {
    const e = this.len();
    const s = this.buf.toString('utf8', this.pos, e);
    this.pos = e;
    return s;
  }

  /** A bytes field as a view on the input (as protobufjs' BufferReader gives). */
  bytes(): Buffer {
    const e = this.len();
    const b = this.buf.subarray(this.pos, e);
    this.pos = e;
    return b;
  }

  double(): number {
    if (this.pos + 8 > this.end) throw new ProtoDecodeError('truncated double');
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }

  /**
   * Skip a field of `wireType` (its tag read) in a message nested `depth` deep; a group to its end tag,
   * its fields one deeper (protobufjs' skipType, depth limit included).
   */
  skip(wireType: number, depth: number): void {
    if (depth > MAX_DEPTH) throw new ProtoDecodeError('maximum nesting depth exceeded');
    switch (wireType) {
      case 0:
        this.u32();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2:
        this.pos = this.len();
        return;
      case 3:
        for (;;) {
          const t = this.u32() & 7;
          if (t === 4) return;
          this.skip(t, depth + 1);
        }
      case 5:
        this.pos += 4;
        break;
      default:
        throw new ProtoDecodeError(`invalid wire type ${wireType}`);
    }
    if (this.pos > this.end) throw new ProtoDecodeError('truncated field');
  }

  /** Enter a length-delimited message: returns the outer end, to restore with leave(). */
  enter(): number {
    const e = this.len();
    const outer = this.end;
    this.end = e;
    return outer;
  }

  leave(outer: number): void {
    this.end = outer;
  }
}
