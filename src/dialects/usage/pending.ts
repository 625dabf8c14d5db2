/**
 * SSE events whose output text is not needed yet, kept as raw bytes (bounded), and the cheap test that
 * tells which events can carry usage and so must be parsed as they come.
 *
 * Every format reads usage only from an object under its usage key (OpenAI and Anthropic `usage`,
 * at the top or under `response` / `message`; Gemini `usageMetadata`). An event's usage can matter
 * only if its JSON text holds that key with a non-null value: the key spelled out (`"usage"` followed
 * by `:` and something else than `null`), or spelled with escapes (`"\u0075sage"`: an escaped ASCII
 * character `\u0040`–`\u007f` anywhere). Other events only add output text, which is needed only when no
 * final usage arrives: they wait here, and are parsed in order when the queue is full or the text is
 * asked for.
 */

const COLON = 0x3a;
const BACKSLASH = 0x5c;

function skipWs(b: Buffer, i: number, end: number): number {
  while (i < end) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
    i++;
  }
  return i;
}

function isNull(b: Buffer, i: number, end: number): boolean {
  return i + 4 <= end && b[i] === 0x6e && b[i + 1] === 0x75 && b[i + 2] === 0x6c && b[i + 3] === 0x6c;
}

/**
 * A `"key"` to look for. The search runs on one byte of it, the rarest in text (Buffer.indexOf of a
 * byte is several times cheaper than of a sequence), and checks the rest around each hit.
 */
export interface KeyNeedle {
  bytes: Buffer;
  /** Index in `bytes` of the byte searched for. */
  anchor: number;
}

/** Letters from the most to the least frequent in English text; upper case rarer still. */
const FREQUENCY = 'etaoinshrdlcumwfgypbvkjxqz';
const rarity = (c: number) => (c >= 0x41 && c <= 0x5a ? 100 : FREQUENCY.indexOf(String.fromCharCode(c)));

/** Needles of usage keys (ASCII names). */
export function keyNeedles(keys: readonly string[]): KeyNeedle[] {
  return keys.map((k) => {
    const bytes = Buffer.from(JSON.stringify(k));
    let anchor = 1;
    for (let i = 2; i < bytes.length - 1; i++) if (rarity(bytes[i]) > rarity(bytes[anchor])) anchor = i;
    return { bytes, anchor };
  });
}

function matchesAt(data: Buffer, needle: Buffer, at: number, start: number, end: number): boolean {
  if (at < start || at + needle.length > end) return false;
  for (let i = 0; i < needle.length; i++) if (data[at + i] !== needle[i]) return false;
  return true;
}

/**
 * The next position of a byte in a buffer, remembered: the events of one chunk are probed in order,
 * each search bounded by its event's end, and a search that ran past it (into the next events) is not
 * repeated — so probing a chunk is linear in its size.
 */
class NextByte {
  private buf?: Buffer;
  private from = 0;
  private at = -1;
  constructor(private readonly byte: number) {}

  /** The first index ≥ from of the byte in buf, or -1. */
  find(buf: Buffer, from: number): number {
    if (buf !== this.buf || from < this.from || (this.at >= 0 && this.at < from)) {
      this.buf = buf;
      this.from = from;
      this.at = buf.indexOf(this.byte, from);
    }
    return this.at;
  }

  /** The buffer's bytes may have changed (a new chunk in a reused buffer). */
  forget(): void {
    this.buf = undefined;
  }
}

/** Tells which SSE events may carry usage (see the top of this file). */
export class UsageProbe {
  private readonly backslash = new NextByte(BACKSLASH);
  private readonly anchors: NextByte[];

  constructor(private readonly needles: readonly KeyNeedle[]) {
    this.anchors = needles.map((n) => new NextByte(n.bytes[n.anchor]));
  }

  /** Call before probing a new chunk. */
  forget(): void {
    this.backslash.forget();
    for (const a of this.anchors) a.forget();
  }

  /**
   * Whether the event data data[start, end) (UTF-8 JSON text) may carry usage. Never false for an
   * event whose parse has a non-null usage key.
   */
  mayCarryUsage(data: Buffer, start: number, end: number): boolean {
    // An escaped ASCII character (\u0040-\u007f): perhaps part of a key spelled with escapes.
    for (let at = this.backslash.find(data, start); at >= 0 && at + 5 < end; ) {
      const h = data[at + 4];
      if (data[at + 1] === 0x75 && data[at + 2] === 0x30 && data[at + 3] === 0x30 && h >= 0x34 && h <= 0x37)
        return true;
      at = this.backslash.find(data, at + 1);
    }
    for (let k = 0; k < this.needles.length; k++) if (this.hasNonNullKey(data, start, end, k)) return true;
    return false;
  }

  /** A non-null value under needle k (a key: followed by a colon) in data[start, end). */
  private hasNonNullKey(data: Buffer, start: number, end: number, k: number): boolean {
    const n = this.needles[k];
    const anchor = this.anchors[k];
    for (let a = anchor.find(data, start + n.anchor); a >= 0 && a < end; a = anchor.find(data, a + 1)) {
      const at = a - n.anchor;
      if (!matchesAt(data, n.bytes, at, start, end)) continue;
      let i = skipWs(data, at + n.bytes.length, end);
      if (i >= end || data[i] !== COLON) continue; // not a key
      i = skipWs(data, i + 1, end);
      if (!isNull(data, i, end)) return true;
    }
    return false;
  }
}

/** Whether data[start, end), decoded and trimmed (String.prototype.trim), is `[DONE]`. */
export function isDone(data: Buffer, start: number, end: number): boolean {
  let i = start;
  while (i < end && (data[i] === 0x20 || (data[i] >= 0x09 && data[i] <= 0x0d))) i++;
  // trim() removes only these ASCII characters (the others it removes are not ASCII): past them, an
  // ASCII byte other than `[` starts the trimmed text.
  if (i === end || (data[i] !== 0x5b && data[i] < 0x80)) return false;
  return data.toString('utf8', start, end).trim() === '[DONE]';
}

/** What one waiting event's bookkeeping is counted as, besides its data bytes. */
export const PENDING_ENTRY_BYTES = 32;

/**
 * Events waiting for their text to be collected: their data bytes in one buffer; the bytes, the
 * bookkeeping (PENDING_ENTRY_BYTES each) and the event names (2 bytes per UTF-16 unit; a name equal to
 * the previous event's is kept once, as providers repeat a few short names) at most maxBytes.
 */
export class PendingEvents {
  private arena = Buffer.alloc(0);
  private used = 0;
  private readonly ends: number[] = [];
  private readonly names: (string | undefined)[] = [];
  /** What the names held cost (nameCost): part of the bound. */
  private nameBytes = 0;
  /** Whether the event's usage was already taken (only its text is left). */
  private readonly usageTaken: boolean[] = [];

  constructor(private readonly maxBytes: number) {}

  get size(): number {
    return this.ends.length;
  }

  /** Whether an event of `n` data bytes named `event` fits. */
  fits(n: number, event: string | undefined): boolean {
    const held = this.used + this.nameBytes + this.nameCost(event);
    return held + n + (this.ends.length + 1) * PENDING_ENTRY_BYTES <= this.maxBytes;
  }

  /** The bytes `event` adds to the names held: none when it repeats the previous event's name. */
  private nameCost(event: string | undefined): number {
    if (event === undefined || event === this.names[this.names.length - 1]) return 0;
    return 2 * event.length;
  }

  /** Keeps a copy of data[start, end) (the caller checked that it fits). */
  add(event: string | undefined, data: Buffer, start: number, end: number, usageTaken: boolean): void {
    const need = this.used + end - start;
    if (need > this.arena.length) {
      let cap = Math.max(this.arena.length * 2, 8192);
      while (cap < need) cap *= 2;
      const grown = Buffer.allocUnsafe(Math.min(cap, this.maxBytes));
      this.arena.copy(grown, 0, 0, this.used);
      this.arena = grown;
    }
    this.arena.set(data.subarray(start, end), this.used); // (cheaper than Buffer#copy for small ranges)
    this.used = need;
    this.ends.push(need);
    this.nameBytes += this.nameCost(event);
    // a repeated name is held once (the previous entry's string), so it costs nothing more
    this.names.push(event === this.names[this.names.length - 1] ? this.names[this.names.length - 1] : event);
    this.usageTaken.push(usageTaken);
  }

  /** Hands each event over in order (its data decoded) and empties the queue. */
  drain(f: (event: string | undefined, data: string, usageTaken: boolean) => void): void {
    let start = 0;
    const n = this.ends.length;
    try {
      for (let i = 0; i < n; i++) {
        f(this.names[i], this.arena.toString('utf8', start, this.ends[i]), this.usageTaken[i]);
        start = this.ends[i];
      }
    } finally {
      this.used = 0;
      this.nameBytes = 0;
      this.ends.length = 0;
      this.names.length = 0;
      this.usageTaken.length = 0;
    }
  }
}
