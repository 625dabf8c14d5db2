/**
 * Bounded buffering of a JSON response body, and a scan for a usage object in a tail of JSON text.
 *
 * A body up to `maxBytes` is kept whole and parsed at the end. Past it, the body is not kept: only its
 * last `tailBytes` are, and usage is taken from the last `"<key>": { ... }` object in that tail (every
 * provider puts usage at or near the end of the body: OpenAI `usage`, Anthropic `usage`, Gemini
 * `usageMetadata`). The text of the content is lost then; if the tail holds no usage either, the
 * caller estimates output from the byte count (see resolveUsage).
 */

export const DEFAULT_MAX_JSON_BYTES = 4 << 20;

export class BoundedBuffer {
  /** The bytes kept: buf[0, len), one copy grown by doubling (however small the chunks). */
  private buf: Buffer | undefined;
  private len = 0;
  total = 0;
  overflow = false;

  constructor(
    private readonly maxBytes: number,
    private readonly tailBytes: number,
  ) {}

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    const need = this.len + chunk.byteLength;
    if (this.buf === undefined || need > this.buf.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * (this.buf?.length ?? 0), 1024));
      this.buf?.copy(grown, 0, 0, this.len);
      this.buf = grown;
    }
    this.buf.set(chunk, this.len); // copy: the caller may reuse its buffer
    this.len = need;
    this.total += chunk.byteLength;
    if (!this.overflow) {
      if (this.len > this.maxBytes) {
        this.overflow = true;
        this.compact();
      }
    } else if (this.len > 2 * this.tailBytes) {
      // Compact to the tail only once it has doubled, so that pushing is amortised O(chunk).
      this.compact();
    }
  }

  private compact(): void {
    const from = Math.max(0, this.len - this.tailBytes);
    this.buf = Buffer.from(this.buf!.subarray(from, this.len));
    this.len = this.buf.length;
  }

  /** The whole body (when !overflow) or its tail (when overflow), as UTF-8 text. */
  text(): string {
    if (this.overflow && this.len > this.tailBytes) this.compact();
    return this.buf === undefined ? '' : this.buf.toString('utf8', 0, this.len);
  }
}

/** JSON.parse, or undefined. */
export function tryParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The last `"key": {...}` object in `text` (JSON text, possibly starting mid-token), parsed; undefined
 * if none parses. The object's end is found by a brace scan that skips strings, so braces in content do
 * not confuse it; a key-like sequence inside a JSON string has its quotes escaped (`\"usage\"`), so
 * only real keys match.
 */
export function lastObjectForKey(
  text: string,
  keys: readonly string[],
): { key: string; value: unknown } | undefined {
  let best: { at: number; key: string; value: unknown } | undefined;
  for (const key of keys) {
    const needle = `"${key}"`;
    let from = text.length;
    while (from > 0) {
      const at = text.lastIndexOf(needle, from - 1);
      if (at < 0) break;
      from = at;
      if (best && at < best.at) break;
      // The quote must not be escaped (i.e. it starts a real key).
      let bs = 0;
      for (let i = at - 1; i >= 0 && text.charCodeAt(i) === 0x5c; i--) bs++;
      if (bs % 2 === 1) continue;
      let i = at + needle.length;
      while (i < text.length && /\s/.test(text[i])) i++;
      if (text[i] !== ':') continue;
      i++;
      while (i < text.length && /\s/.test(text[i])) i++;
      if (text[i] !== '{') continue;
      const end = objectEnd(text, i);
      if (end < 0) continue;
      const value = tryParse(text.slice(i, end + 1));
      if (value === undefined) continue;
      if (!best || at > best.at) best = { at, key, value };
      break;
    }
  }
  return best ? { key: best.key, value: best.value } : undefined;
}

/** Index of the `}` closing the object that opens at `start`, or -1. */
function objectEnd(text: string, start: number): number {
  let depth = 0;
  let inStr = false;
  for (let i = start; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inStr) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inStr = false;
    } else if (c === 0x22) inStr = true;
    else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      depth--;
      if (depth === 0) return c === 0x7d ? i : -1;
    }
  }
  return -1;
}
