/**
 * Incremental Server-Sent Events parsing over raw bytes split anywhere.
 *
 * Lines are cut at LF bytes (a trailing CR is dropped, so CRLF works; a lone CR is not a line end —
 * no LLM provider sends one). Since 0x0A never occurs inside a multi-byte UTF-8 sequence, each line is
 * decoded only once it is complete, so chunks split mid-character decode correctly. Lines are read in
 * place: only a line split across chunks is copied, and only `event:` values are decoded here — a
 * one-line event's data reaches the consumer as bytes (RawSseParser), decoded when (if) it needs them.
 *
 * Memory is bounded: a line longer than `maxLineBytes` is not kept whole; only its last `tailBytes`
 * are, and the event carrying it is delivered with `overLong` set (its `data` is that tail, so the
 * consumer can still scan it for a usage object, and `droppedBytes` says how much was not kept).
 */

export interface SseEvent {
  /** The `event:` field, if any. */
  event?: string;
  /** The `data:` lines joined with LF (for an over-long event: the kept tail). */
  data: string;
  /** The data exceeded maxLineBytes: `data` is only its tail. */
  overLong: boolean;
  /** Bytes of data not kept (0 unless overLong). */
  droppedBytes: number;
}

/** Where RawSseParser delivers events. */
export interface RawSseHandler {
  /**
   * A one-line event: its data is the UTF-8 bytes b[start, end), valid only during the call (b may be
   * the pushed chunk: copy what you keep).
   */
  bytes(event: string | undefined, b: Buffer, start: number, end: number): void;
  /** An event of several data lines, or an over-long one: its data decoded and joined, as in SseEvent. */
  text(event: string | undefined, data: string, overLong: boolean, droppedBytes: number): void;
}

export const DEFAULT_MAX_LINE_BYTES = 4 << 20;
export const DEFAULT_TAIL_BYTES = 256 << 10;

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;

/** Whether the line b[s, e) is field `name` (ASCII): `name` then a colon or the line's end. */
function fieldIs(b: Buffer, s: number, e: number, name: string): boolean {
  const end = s + name.length;
  if (end > e || (end < e && b[end] !== COLON)) return false;
  for (let i = 0; i < name.length; i++) if (b[s + i] !== name.charCodeAt(i)) return false;
  return true;
}

export class RawSseParser {
  /**
   * The current line's bytes seen so far, when it spans chunks: buf[0, bufLen), a copy grown by
   * doubling (one buffer however small the chunks, at most twice the bytes held).
   */
  private buf: Buffer | undefined;
  private bufLen = 0;
  /** The current line overflowed: bytes are dropped from the front of buf as they come. */
  private lineDropped = 0;
  private event: string | undefined;
  /** The event's only data line so far: data[dataStart, dataEnd) (may be the chunk being pushed). */
  private data: Buffer | undefined;
  private dataStart = 0;
  private dataEnd = 0;
  /** Whether `data` is the caller's chunk. */
  private borrowed = false;
  /** The event's data lines decoded, once it has several (or an over-long one). */
  private lines: string[] | undefined;
  private dataOverLong = false;
  private dataDropped = 0;

  constructor(
    private readonly on: RawSseHandler,
    private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES,
    private readonly tailBytes = DEFAULT_TAIL_BYTES,
  ) {}

  push(chunk: Uint8Array): void {
    const c = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    for (;;) {
      const nl = c.indexOf(LF, start);
      if (nl < 0) {
        if (start < c.length) this.append(c.subarray(start));
        break;
      }
      if (this.bufLen === 0 && this.lineDropped === 0 && nl - start <= this.maxLineBytes) {
        // The whole line is in this chunk: read it in place.
        this.line(c, start, nl, 0, true);
      } else {
        this.append(c.subarray(start, nl));
        this.finishLine();
      }
      start = nl + 1;
    }
    if (this.borrowed) {
      // Copy: the caller may reuse its chunk buffer.
      this.data = Buffer.from(this.data!.subarray(this.dataStart, this.dataEnd));
      this.dataStart = 0;
      this.dataEnd = this.data.length;
      this.borrowed = false;
    }
  }

  /** End of the body: a last line without LF and a last event without a blank line are delivered. */
  end(): void {
    if (this.bufLen > 0 || this.lineDropped > 0) this.finishLine();
    this.dispatch();
  }

  private append(b: Buffer): void {
    if (b.length === 0) return;
    // Copy: the caller may reuse its chunk buffer.
    const need = this.bufLen + b.length;
    if (this.buf === undefined || need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * (this.buf?.length ?? 0), 256));
      this.buf?.copy(grown, 0, 0, this.bufLen);
      this.buf = grown;
    }
    b.copy(this.buf, this.bufLen);
    this.bufLen = need;
    if (this.bufLen > this.maxLineBytes) {
      // Keep only the tail.
      const from = Math.max(0, this.bufLen - this.tailBytes);
      this.lineDropped += from;
      this.buf = Buffer.from(this.buf.subarray(from, this.bufLen));
      this.bufLen = this.buf.length;
    }
  }

  /** The buffered line is complete. */
  private finishLine(): void {
    // The line takes the buffer (its data may be kept until the event ends); the next line gets a new one.
    let line = this.buf === undefined ? Buffer.alloc(0) : this.buf.subarray(0, this.bufLen);
    let dropped = this.lineDropped;
    if (dropped > 0 && line.length > this.tailBytes) {
      dropped += line.length - this.tailBytes;
      line = line.subarray(line.length - this.tailBytes);
    }
    this.buf = undefined;
    this.bufLen = 0;
    this.lineDropped = 0;
    this.line(line, 0, line.length, dropped, false);
  }

  /** One complete line b[s, e) (without its LF); `inChunk`: b is the chunk being pushed. */
  private line(b: Buffer, s: number, e: number, dropped: number, inChunk: boolean): void {
    if (e > s && b[e - 1] === CR) e--;
    if (e === s && dropped === 0) {
      this.dispatch();
      return;
    }
    if (dropped > 0) {
      // Over-long line: the field name is lost with its head; only data lines get that long.
      this.addLine(b.toString('utf8', s, e));
      this.dataOverLong = true;
      this.dataDropped += dropped;
      return;
    }
    // A colon byte is a whole character: the bytes before the first one are the field name.
    if (fieldIs(b, s, e, 'data')) {
      const v = this.value(b, s + 4, e);
      if (this.data === undefined && this.lines === undefined) {
        this.data = b;
        this.dataStart = v;
        this.dataEnd = e;
        this.borrowed = inChunk;
      } else this.addLine(b.toString('utf8', v, e));
    } else if (fieldIs(b, s, e, 'event')) {
      this.event = b.toString('utf8', this.value(b, s + 5, e), e);
    }
    // Comments (`:`), id, retry, unknown fields: ignored.
  }

  /** Where the value of a field ending at `f` starts: past the colon and one space. */
  private value(b: Buffer, f: number, e: number): number {
    if (f >= e) return e;
    return b[f + 1] === SPACE && f + 1 < e ? f + 2 : f + 1;
  }

  /** A decoded data line (the event has several, or an over-long one). */
  private addLine(text: string): void {
    if (this.lines === undefined) {
      this.lines = this.data === undefined ? [] : [this.data.toString('utf8', this.dataStart, this.dataEnd)];
      this.data = undefined;
      this.borrowed = false;
    }
    this.lines.push(text);
  }

  private dispatch(): void {
    if (this.lines !== undefined)
      this.on.text(this.event, this.lines.join('\n'), this.dataOverLong, this.dataDropped);
    else if (this.data !== undefined) this.on.bytes(this.event, this.data, this.dataStart, this.dataEnd);
    this.event = undefined;
    this.data = undefined;
    this.borrowed = false;
    this.lines = undefined;
    this.dataOverLong = false;
    this.dataDropped = 0;
  }
}

/** RawSseParser delivering decoded SseEvents. */
export class SseParser {
  private readonly raw: RawSseParser;

  constructor(
    onEvent: (e: SseEvent) => void,
    maxLineBytes = DEFAULT_MAX_LINE_BYTES,
    tailBytes = DEFAULT_TAIL_BYTES,
  ) {
    const event = (e: SseEvent, name: string | undefined) => {
      if (name !== undefined) e.event = name;
      onEvent(e);
    };
    this.raw = new RawSseParser(
      {
        bytes: (name, b, start, end) =>
          event({ data: b.toString('utf8', start, end), overLong: false, droppedBytes: 0 }, name),
        text: (name, data, overLong, droppedBytes) => event({ data, overLong, droppedBytes }, name),
      },
      maxLineBytes,
      tailBytes,
    );
  }

  push(chunk: Uint8Array): void {
    this.raw.push(chunk);
  }

  end(): void {
    this.raw.end();
  }
}
