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
const ESCAPED_ASCII = Buffer.from('\\u00');
const DONE = Buffer.from('[DONE]');

function skipWs(b: Buffer, i: number): number {
  while (i < b.length) {
    const c = b[i];
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
    i++;
  }
  return i;
}

function isNull(b: Buffer, i: number): boolean {
  return b[i] === 0x6e && b[i + 1] === 0x75 && b[i + 2] === 0x6c && b[i + 3] === 0x6c;
}

/** `"key"` needles of usage keys. */
export function keyNeedles(keys: readonly string[]): Buffer[] {
  return keys.map((k) => Buffer.from(JSON.stringify(k)));
}

/**
 * Whether this event data (UTF-8 JSON text) may carry usage under one of `needles` (see keyNeedles).
 * Never false for an event whose parse has a non-null usage key; may be true for others.
 */
export function mayCarryUsage(data: Buffer, needles: readonly Buffer[]): boolean {
  for (let at = data.indexOf(ESCAPED_ASCII); at >= 0; at = data.indexOf(ESCAPED_ASCII, at + 1)) {
    const h = data[at + 4];
    if (h >= 0x34 && h <= 0x37) return true;
  }
  for (const needle of needles) {
    for (let at = data.indexOf(needle); at >= 0; at = data.indexOf(needle, at + 1)) {
      let i = skipWs(data, at + needle.length);
      if (data[i] !== COLON) continue; // not a key
      i = skipWs(data, i + 1);
      if (!isNull(data, i)) return true;
    }
  }
  return false;
}

/** Whether the data, trimmed (String.prototype.trim), is `[DONE]`. */
export function isDone(data: Buffer): boolean {
  return data.indexOf(DONE) >= 0 && data.toString('utf8').trim() === '[DONE]';
}

/** Events waiting for their text to be collected: their data bytes in one buffer, at most maxBytes. */
export class PendingEvents {
  private arena = Buffer.alloc(0);
  private used = 0;
  private readonly ends: number[] = [];
  private readonly names: (string | undefined)[] = [];
  /** Whether the event's usage was already taken (only its text is left). */
  private readonly usageTaken: boolean[] = [];

  constructor(private readonly maxBytes: number) {}

  get size(): number {
    return this.ends.length;
  }

  /** Whether `n` more bytes fit. */
  fits(n: number): boolean {
    return this.used + n <= this.maxBytes;
  }

  /** Keeps a copy of `data` (the caller checked that it fits). */
  add(event: string | undefined, data: Buffer, usageTaken: boolean): void {
    const need = this.used + data.length;
    if (need > this.arena.length) {
      let cap = Math.max(this.arena.length * 2, 8192);
      while (cap < need) cap *= 2;
      const grown = Buffer.allocUnsafe(Math.min(cap, this.maxBytes));
      this.arena.copy(grown, 0, 0, this.used);
      this.arena = grown;
    }
    data.copy(this.arena, this.used);
    this.used = need;
    this.ends.push(need);
    this.names.push(event);
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
      this.ends.length = 0;
      this.names.length = 0;
      this.usageTaken.length = 0;
    }
  }
}
