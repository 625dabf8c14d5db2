/**
 * Response usage extraction (pure: no I/O). Feed the decoded response body (see src/settle/decode.ts
 * for content-encoding) in arbitrary chunks; end() returns a UsageScan; resolveUsage(scan, count)
 * turns it into a Usage, counting collected output text with the caller's tokenizer when the provider
 * reported no output usage.
 *
 * The body is sniffed: its first non-blank byte `{` or `[` means JSON (a whole response, or Gemini's
 * streamed JSON array), anything else SSE (`data:`, `event:`, `:` comment...). A `content-type:
 * text/event-stream` hint forces SSE.
 *
 * Bounds (memory per response, whatever the provider sends):
 *  - JSON: buffered whole up to maxJsonBytes (default 4 MiB) and parsed at the end; past it only the
 *    last tailBytes (default 256 KiB) are kept and the last usage object in them is used. No usage
 *    there either → output estimated as bytes ÷ 4 of the whole body (an over-count: JSON syntax
 *    included), source 'counted'.
 *  - SSE: one line is buffered up to maxLineBytes (default 4 MiB); a longer line keeps its tail, which
 *    is scanned for a usage object; if none is found its bytes count one token each (upper bound).
 *    Events that cannot carry usage (most of a stream: content deltas) are not parsed as they come:
 *    their text is needed only if no final usage arrives. Their data waits as raw bytes, up to
 *    tailBytes with its bookkeeping (default 256 KiB; past it the waiting events are parsed and their
 *    text collected), and is parsed when the scan's `text` (or `understood`) is first read (see
 *    pending.ts). So SSE keeps at most a line, tailBytes of waiting events and the collected text.
 *  - Collected output text: up to maxTextChars (default 1 Mi UTF-16 units); past it pieces are not
 *    kept and are estimated (ASCII 4 bytes per token rounded up, one token per other character), so
 *    the count never falls below what natural text tokenizes to.
 */
import { DEFAULT_MAX_TEXT_CHARS, TextCollector } from './collect.js';
import { type Format, formatFor, UsageAcc, type UsageDialect } from './formats.js';
import { BoundedBuffer, DEFAULT_MAX_JSON_BYTES, lastObjectForKey, tryParse } from './json.js';
import { isDone, type KeyNeedle, keyNeedles, PendingEvents, UsageProbe } from './pending.js';
import { DEFAULT_MAX_LINE_BYTES, DEFAULT_TAIL_BYTES, RawSseParser } from './sse.js';
import type { CollectedText, UsageExtractor, UsageExtractorOptions, UsageScan } from './types.js';

export { estimateTokens, resolveUsage, TextCollector } from './collect.js';
export type { UsageDialect } from './formats.js';
export { lastObjectForKey } from './json.js';
export { type RawSseHandler, RawSseParser, type SseEvent, SseParser } from './sse.js';
export type {
  CollectedText,
  Usage,
  UsageExtractor,
  UsageExtractorOptions,
  UsageScan,
  UsageSource,
} from './types.js';

/** Whether a content-type header value names an SSE stream. */
export function isEventStream(contentType: string | undefined): boolean {
  return typeof contentType === 'string' && /^\s*text\/event-stream\b/i.test(contentType);
}

/** The extractor behind a scan (a hidden property), and the scan's lazily worked-out fields. */
const EXTRACTOR = Symbol('extractor');
type LazyScan = UsageScan & { [EXTRACTOR]: Extractor };
const TEXT: PropertyDescriptor = {
  get(this: LazyScan) {
    return this[EXTRACTOR].collected();
  },
  enumerable: true,
};
const UNDERSTOOD: PropertyDescriptor = {
  get(this: LazyScan) {
    return this[EXTRACTOR].isUnderstood();
  },
  enumerable: true,
};

/** `"key"` needles of each format's usage keys. */
const NEEDLES = new WeakMap<Format, KeyNeedle[]>();

function needlesFor(format: Format): KeyNeedle[] {
  let n = NEEDLES.get(format);
  if (!n) {
    n = keyNeedles(format.usageKeys);
    NEEDLES.set(format, n);
  }
  return n;
}

class Extractor implements UsageExtractor {
  private readonly acc: UsageAcc;
  private mode: 'sniff' | 'json' | 'sse';
  private json?: BoundedBuffer;
  private sse?: RawSseParser;
  /** SSE events whose text is not collected yet. */
  private readonly pending: PendingEvents;
  private readonly probe: UsageProbe;
  private bytes = 0;
  private understood = false;
  private jsonOverflow = false;
  private result?: UsageScan;
  private text?: CollectedText;
  private readonly o: Required<UsageExtractorOptions>;

  constructor(
    private readonly format: Format,
    opts: UsageExtractorOptions,
    forceSse: boolean,
  ) {
    this.o = {
      maxJsonBytes: opts.maxJsonBytes ?? DEFAULT_MAX_JSON_BYTES,
      tailBytes: opts.tailBytes ?? DEFAULT_TAIL_BYTES,
      maxLineBytes: opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
      maxTextChars: opts.maxTextChars ?? DEFAULT_MAX_TEXT_CHARS,
    };
    this.acc = new UsageAcc(new TextCollector(this.o.maxTextChars));
    this.pending = new PendingEvents(this.o.tailBytes);
    this.probe = new UsageProbe(needlesFor(format));
    this.mode = forceSse ? 'sse' : 'sniff';
    if (forceSse) this.startSse();
  }

  private startSse(): void {
    this.mode = 'sse';
    this.sse = new RawSseParser(
      {
        bytes: (event, b, start, end) => this.onEvent(event, b, start, end),
        text: (event, data, overLong, dropped) => this.onText(event, data, overLong, dropped),
      },
      this.o.maxLineBytes,
      this.o.tailBytes,
    );
  }

  push(chunk: Uint8Array): void {
    if (this.result || chunk.byteLength === 0) return;
    this.bytes += chunk.byteLength;
    if (this.mode === 'sniff') {
      let i = 0;
      while (
        i < chunk.byteLength &&
        (chunk[i] === 0x20 || chunk[i] === 0x0a || chunk[i] === 0x0d || chunk[i] === 0x09)
      )
        i++;
      if (i === chunk.byteLength) {
        // Only blanks so far: still undecided (blank lines are harmless to either parser).
        return;
      }
      if (chunk[i] === 0x7b || chunk[i] === 0x5b) {
        this.mode = 'json';
        this.json = new BoundedBuffer(this.o.maxJsonBytes, this.o.tailBytes);
      } else this.startSse();
      chunk = chunk.subarray(i);
    }
    if (this.mode === 'json') this.json!.push(chunk);
    else {
      this.probe.forget();
      this.sse!.push(chunk);
    }
  }

  /** An SSE event of several data lines (rare): parsed now, after the events before it; or over-long. */
  private onText(event: string | undefined, data: string, overLong: boolean, dropped: number): void {
    if (overLong) {
      this.scanTail(data, this.format.overLongEventFinal, dropped);
      return;
    }
    this.flush();
    this.apply(event, data, true, true);
  }

  /**
   * A one-line SSE event, b[start, end). Its usage is taken now, in order; its text is collected in
   * order too, but may wait (see pending.ts) — then only its raw bytes are kept.
   */
  private onEvent(event: string | undefined, b: Buffer, start: number, end: number): void {
    if (isDone(b, start, end)) {
      this.understood = true;
      return;
    }
    const usage = this.probe.mayCarryUsage(b, start, end);
    const n = end - start;
    if (!this.pending.fits(n, event)) this.flush();
    if (!this.pending.fits(n, event) || (usage && this.pending.size === 0)) {
      // Nothing waits before it (or it is too large to wait): all of it now.
      this.apply(event, b.toString('utf8', start, end), true, true);
    } else {
      // Its usage now; its text after the text of the events waiting before it.
      if (usage) this.apply(event, b.toString('utf8', start, end), true, false);
      this.pending.add(event, b, start, end, usage);
    }
  }

  /** An event's data: its usage (`usage`) and its output text (`text`) go to the accumulator. */
  private apply(event: string | undefined, raw: string, usage: boolean, text: boolean): void {
    const d = raw.trim();
    if (d === '[DONE]') {
      this.understood = true;
      return;
    }
    const data = tryParse(d);
    if (data === undefined) return;
    this.understood = true;
    this.acc.takeUsage = usage;
    this.acc.collect = text;
    try {
      this.format.event(event, data, this.acc);
    } catch {
      // A hostile shape that slipped past the readers' checks: ignore the event.
    } finally {
      this.acc.takeUsage = true;
      this.acc.collect = true;
    }
  }

  /** Collects the text of the waiting events, in order. */
  private flush(): void {
    if (this.pending.size > 0)
      this.pending.drain((event, raw, taken) => this.apply(event, raw, !taken, true));
  }

  /** Usage from the tail of a body/line too large to keep; else its bytes are estimated. */
  private scanTail(text: string, final: boolean, droppedBytes = 0): boolean {
    const found = lastObjectForKey(text, this.format.usageKeys);
    if (found) {
      this.understood = true;
      this.format.usage(found.value, this.acc, final);
      return true;
    }
    if (droppedBytes > 0) this.acc.text.addOpaqueBytes(Buffer.byteLength(text) + droppedBytes);
    return false;
  }

  private endJson(): void {
    const buf = this.json!;
    const text = buf.text();
    if (!buf.overflow) {
      const body = tryParse(text);
      if (body !== undefined) {
        this.understood = true;
        try {
          this.format.json(body, this.acc);
        } catch {
          // ignore
        }
      }
    } else {
      this.jsonOverflow = true;
      this.scanTail(text, true);
    }
  }

  end(): UsageScan {
    if (this.result) return this.result;
    if (this.mode === 'sse') this.sse!.end();
    else if (this.mode === 'json') this.endJson();
    // The usage is complete now; the text (and whether any event parsed, if none did yet) is worked
    // out when first read: a caller with the final usage never needs the text. Own enumerable
    // accessors, so that the scan reads, copies and compares like plain data.
    const r = { outputFloor: this.acc.outputFloor } as UsageScan;
    Object.defineProperty(r, EXTRACTOR, { value: this });
    Object.defineProperty(r, 'text', TEXT);
    r.bytes = this.bytes;
    Object.defineProperty(r, 'understood', UNDERSTOOD);
    r.jsonOverflow = this.jsonOverflow;
    if (this.acc.prompt) r.prompt = this.acc.prompt;
    if (this.acc.output) r.output = this.acc.output;
    this.result = r;
    return r;
  }

  /** Whether any event parsed (the waiting ones are parsed if none did yet). */
  isUnderstood(): boolean {
    if (!this.understood) this.flush();
    return this.understood;
  }

  /** The collected output text (the waiting events' text collected first). */
  collected(): CollectedText {
    if (!this.text) {
      this.flush();
      this.text = this.acc.text.result();
    }
    return this.text;
  }
}

/**
 * A streaming usage extractor for a response of `dialect`.
 * @param contentType the response's content-type (a text/event-stream value forces SSE parsing).
 */
export function createUsageExtractor(
  dialect: UsageDialect,
  contentType?: string,
  opts: UsageExtractorOptions = {},
): UsageExtractor {
  return new Extractor(formatFor(dialect), opts, isEventStream(contentType));
}

/** Convenience: scan a whole body at once. */
export function scanUsage(
  dialect: UsageDialect,
  body: Uint8Array | string,
  contentType?: string,
  opts?: UsageExtractorOptions,
): UsageScan {
  const x = createUsageExtractor(dialect, contentType, opts);
  x.push(typeof body === 'string' ? Buffer.from(body, 'utf8') : body);
  return x.end();
}
