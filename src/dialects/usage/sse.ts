/**
 * Incremental Server-Sent Events parsing over raw bytes split anywhere.
 *
 * Lines are cut at LF bytes (a trailing CR is dropped, so CRLF works; a lone CR is not a line end —
 * no LLM provider sends one). Since 0x0A never occurs inside a multi-byte UTF-8 sequence, each line is
 * decoded only once it is complete, so chunks split mid-character decode correctly.
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

export const DEFAULT_MAX_LINE_BYTES = 4 << 20;
export const DEFAULT_TAIL_BYTES = 256 << 10;

export class SseParser {
  private buf: Buffer[] = [];
  private bufLen = 0;
  /** The current line overflowed: bytes are dropped from the front of buf as they come. */
  private lineDropped = 0;
  private event: string | undefined;
  private data: string[] = [];
  private dataOverLong = false;
  private dataDropped = 0;
  private hasData = false;

  constructor(
    private readonly onEvent: (e: SseEvent) => void,
    private readonly maxLineBytes = DEFAULT_MAX_LINE_BYTES,
    private readonly tailBytes = DEFAULT_TAIL_BYTES,
  ) {}

  push(chunk: Uint8Array): void {
    let start = 0;
    const c = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (;;) {
      const nl = c.indexOf(0x0a, start);
      if (nl < 0) {
        if (start < c.length) this.append(c.subarray(start));
        return;
      }
      this.append(c.subarray(start, nl));
      this.finishLine();
      start = nl + 1;
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
    this.buf.push(Buffer.from(b));
    this.bufLen += b.length;
    if (this.bufLen > this.maxLineBytes) {
      // Keep only the tail.
      const all = Buffer.concat(this.buf, this.bufLen);
      const keep = all.subarray(all.length - this.tailBytes);
      this.lineDropped += all.length - keep.length;
      this.buf = [Buffer.from(keep)];
      this.bufLen = keep.length;
    }
  }

  private finishLine(): void {
    let line = this.buf.length === 1 ? this.buf[0] : Buffer.concat(this.buf, this.bufLen);
    let dropped = this.lineDropped;
    if (dropped > 0 && line.length > this.tailBytes) {
      dropped += line.length - this.tailBytes;
      line = line.subarray(line.length - this.tailBytes);
    }
    this.buf = [];
    this.bufLen = 0;
    this.lineDropped = 0;
    if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    if (line.length === 0 && dropped === 0) {
      this.dispatch();
      return;
    }
    const text = line.toString('utf8');
    if (dropped > 0) {
      // Over-long line: the field name is lost with its head; only data lines get that long.
      this.hasData = true;
      this.data.push(text);
      this.dataOverLong = true;
      this.dataDropped += dropped;
      return;
    }
    if (text.charCodeAt(0) === 0x3a /* : comment */) return;
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    if (field === 'data') {
      this.hasData = true;
      this.data.push(value);
    } else if (field === 'event') {
      this.event = value;
    }
    // id, retry, unknown fields: ignored.
  }

  private dispatch(): void {
    if (this.hasData) {
      const e: SseEvent = {
        data: this.data.join('\n'),
        overLong: this.dataOverLong,
        droppedBytes: this.dataDropped,
      };
      if (this.event !== undefined) e.event = this.event;
      this.onEvent(e);
    }
    this.event = undefined;
    this.data = [];
    this.hasData = false;
    this.dataOverLong = false;
    this.dataDropped = 0;
  }
}
