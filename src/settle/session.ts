/**
 * One ext_proc stream's settlement: what Envoy sends about one call's response, in, and exactly one
 * Settler.finish out (or none, when the stream never named a reservation).
 *
 *  - The reservation id comes from the forwarded ext_authz metadata (any message:
 *    metadata_context.filter_metadata['envoy.filters.http.ext_authz'].tollgate_reservation) or from
 *    the request_headers message's x-tollgate-reservation header, whichever arrives first. Once known,
 *    the reservation is opened (a store read) while the response streams on.
 *  - response_headers: :status, content-type, content-encoding.
 *  - response_body chunks (split anywhere) go through the content decoder to the usage extractor of the
 *    record's dialect. While the reservation is being opened raw chunks wait, up to maxPendingBytes;
 *    past it they are dropped and the call's usage is unknown: its reservation stands ('kept').
 *  - The end: the response body's end_of_stream, response headers with end_of_stream (no body), or the
 *    stream closing early (client gone, Envoy closed, cancelled). What was seen is resolved to a usage
 *    (output text counted with the record's encoding) and the reservation settled to it. Nothing seen
 *    at all → usage undefined: the reservation stands.
 * Never throws: every failure ends as a settlement outcome (or nothing).
 */
import {
  EXT_AUTHZ_NAMESPACE,
  RESERVATION_HEADER,
  RESERVATION_METADATA_KEY,
} from '../decision/reservation.js';
import type { ParsedCall } from '../dialects/types.js';
import {
  createUsageExtractor,
  resolveUsage,
  type Usage,
  type UsageDialect,
  type UsageExtractor,
} from '../dialects/usage/index.js';
import type { TokenPool } from '../offload/pool.js';
import { countText, getCounter } from '../tokens/encoders.js';
import { BodyDecoder } from './decode.js';
import { type ExtProcProcessingRequest, extProcHeader, forwardedMetadataString } from './messages.js';
import type { OpenReservation, ResponseOutcome, SettleOutcomeLabel } from './settler.js';

/** Raw body bytes held while the reservation is being opened. */
export const DEFAULT_MAX_PENDING_BYTES = 8 << 20;
/** Output texts longer than this (UTF-16 units) are counted on the token pool, off the event loop. */
export const POOL_COUNT_CHARS = 16 * 1024;

/** What a session needs of the Settler (src/settle/settler.ts). */
export interface SessionSettler {
  open(id: string): Promise<OpenReservation | SettleOutcomeLabel>;
  finish(r: OpenReservation, res: ResponseOutcome): Promise<SettleOutcomeLabel>;
}

/** Counts output text with an encoding (tiktoken-compatible counts). */
export type CountOutput = (text: string, encoding: string) => Promise<number>;

export interface SessionOptions {
  settler: SessionSettler;
  count?: CountOutput;
  maxPendingBytes?: number;
  /** Bytes every stream of the process may hold at once (settle.max_buffered_bytes). */
  budget?: ResponseBudget;
  /** The answer cache's fill (src/cache/): a complete 2xx answer of a call whose record names an entry. */
  fill?: CacheFill;
}

/** Hands a complete 2xx answer (decoded body) to the answer cache; `maxBytes` bounds what is kept. */
export interface CacheFill {
  maxBytes(): number;
  fill(record: OpenReservation['record'], contentType: string | undefined, body: Buffer): void;
}

/**
 * Response bytes held across every ext_proc stream of the process: each stream is charged what it
 * holds while its reservation opens and what it feeds the usage extractor (an over-estimate of what
 * the extractor keeps, capped per stream at what it can keep: RETAINED_MAX), and gives it all back when
 * it settles. A stream refused here stops reading: its reservation stands (charged as reserved,
 * never less).
 */
export class ResponseBudget {
  used = 0;
  /** Streams that stopped reading because the budget was spent. */
  refusals = 0;
  constructor(public max: number) {}

  take(n: number): boolean {
    if (this.used + n > this.max) {
      this.refusals++;
      return false;
    }
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/**
 * Most an extractor keeps of one body: its JSON buffer (or SSE line), a tail (or the SSE events waiting
 * for their text), and the collected text (UTF-16).
 */
const RETAINED_MAX = (4 << 20) + (256 << 10) + 2 * (1 << 20);

const DIALECTS: ReadonlySet<string> = new Set<UsageDialect>([
  'openai.chat',
  'openai.completions',
  'openai.embeddings',
  'openai.responses',
  'anthropic.messages',
  'gemini.generateContent',
]);

/**
 * Output counting: inline for short texts, on the token pool (when given) for long ones. An unknown
 * encoding counts one token per UTF-16 unit (an over-count: never under-charge).
 */
export function outputCounter(pool?: TokenPool): CountOutput {
  return async (text, encoding) => {
    try {
      if (pool && text.length > POOL_COUNT_CHARS) {
        const call: ParsedCall = {
          dialect: 'openai.completions',
          n: 1,
          stream: false,
          tools: [],
          prompt: { kind: 'text', messages: [], texts: [text], preTokenized: 0, images: 0, toolDefs: [] },
        };
        return await pool.count(call, encoding, { imageTokens: 0 });
      }
      return countText(getCounter(encoding), text);
    } catch {
      return text.length;
    }
  };
}

export class SettleSession {
  private id?: string;
  private opening?: Promise<OpenReservation | SettleOutcomeLabel>;
  private open?: OpenReservation;
  private status?: number;
  private contentType?: string;
  private contentEncoding?: string;
  private headersSeen = false;
  private bodySeen = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Body bytes dropped while opening: the usage is unknown, the reservation stands. */
  private lost = false;
  /** The id named no reservation to settle: nothing to read. */
  private none = false;
  private decoder?: BodyDecoder;
  private extractor?: UsageExtractor;
  private finished?: Promise<SettleOutcomeLabel | undefined>;
  private readonly count: CountOutput;
  private readonly maxPending: number;
  /** Bytes this stream was charged on the process-wide budget. */
  private charged = 0;
  /** The decoded answer kept for the cache (undefined: not kept, or given up: too large, no budget). */
  private kept?: Buffer[];
  private keptBytes = 0;
  private decodedOk = false;
  /** The body's end was seen (end_of_stream): the answer is complete. */
  private complete = false;

  constructor(private readonly o: SessionOptions) {
    this.count = o.count ?? outputCounter();
    this.maxPending = o.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES;
  }

  /** The settlement's outcome once the session has ended (undefined: no reservation named). */
  get done(): Promise<SettleOutcomeLabel | undefined> | undefined {
    return this.finished;
  }

  /** One ProcessingRequest from Envoy. */
  feed(req: ExtProcProcessingRequest): void {
    if (this.finished) return;
    try {
      this.takeId(req);
      switch (req.request) {
        case 'response_headers':
          this.onHeaders(req);
          break;
        case 'response_body':
          this.onBody(req);
          break;
        case 'response_trailers':
          this.end();
          break;
      }
    } catch {
      // A malformed message: ignore it (the end settles what was seen).
    }
  }

  /** The stream ended (half-close, cancel, error): settle what was seen. Idempotent. */
  end(): Promise<SettleOutcomeLabel | undefined> {
    this.finished ??= this.settle()
      .catch(() => undefined)
      .finally(() => this.release());
    return this.finished;
  }

  /** Charge `n` held bytes on the process budget (false: spent; the stream stops reading). */
  private charge(n: number): boolean {
    const b = this.o.budget;
    if (!b || this.charged >= RETAINED_MAX + this.maxPending) return true;
    if (!b.take(n)) return false;
    this.charged += n;
    return true;
  }

  private release(): void {
    this.o.budget?.give(this.charged);
    this.charged = 0;
    this.pending = [];
  }

  private takeId(req: ExtProcProcessingRequest): void {
    if (this.id !== undefined) return;
    let id = forwardedMetadataString(req, EXT_AUTHZ_NAMESPACE, RESERVATION_METADATA_KEY);
    if (id === undefined && req.request === 'request_headers')
      id = extProcHeader(req.request_headers, RESERVATION_HEADER);
    if (id === undefined || id.length === 0) return;
    this.id = id.slice(0, 256);
    const opening = this.o.settler.open(this.id).catch((): SettleOutcomeLabel => 'failed');
    this.opening = opening;
    opening.then((r) => {
      if (typeof r !== 'string') {
        this.open = r;
        this.drain();
      } else {
        this.none = true;
        this.pending = [];
      }
    });
  }

  private onHeaders(req: ExtProcProcessingRequest): void {
    if (this.headersSeen) return;
    const h = req.response_headers;
    this.headersSeen = true;
    const st = Number.parseInt(extProcHeader(h, ':status') ?? '', 10);
    if (Number.isInteger(st)) this.status = st;
    this.contentType = extProcHeader(h, 'content-type');
    this.contentEncoding = extProcHeader(h, 'content-encoding');
    this.drain();
    if (h?.end_of_stream) this.end();
  }

  private onBody(req: ExtProcProcessingRequest): void {
    const b = req.response_body;
    const chunk = b?.body;
    if (chunk && chunk.byteLength > 0) {
      this.bodySeen = true;
      if (this.extractor) this.decoder!.write(chunk);
      else if (this.opening && !this.none && !this.lost) this.hold(chunk);
    }
    if (b?.end_of_stream) {
      this.complete = true;
      this.end();
    }
  }

  /** Keep a raw chunk until the reservation is open (bounded). */
  private hold(chunk: Buffer): void {
    this.pendingBytes += chunk.byteLength;
    if (this.pendingBytes > this.maxPending || !this.charge(chunk.byteLength)) {
      this.lost = true;
      this.pending = [];
      return;
    }
    this.pending.push(Buffer.from(chunk)); // copy: the decoder's buffer may be reused
  }

  /** Once both the reservation and the response headers are known: start reading the body. */
  private drain(): void {
    if (this.extractor || !this.open || !this.headersSeen || this.lost) return;
    const d = this.open.record.d;
    const dialect = (DIALECTS.has(d) ? d : 'openai.chat') as UsageDialect;
    const x = createUsageExtractor(dialect, this.contentType);
    this.extractor = x;
    const fill = this.o.fill;
    const st = this.status ?? 0;
    if (fill && this.open.record.c && st >= 200 && st <= 299) this.kept = [];
    this.decoder = new BodyDecoder(this.contentEncoding, (c) => {
      if (this.lost) return;
      if (this.charge(c.byteLength)) x.push(c);
      else this.lost = true; // the process budget is spent: the reservation stands
      if (this.kept) this.keep(c, fill!.maxBytes());
    });
    for (const c of this.pending) this.decoder.write(c);
    this.pending = [];
  }

  /** Keep a decoded chunk for the cache, within its entry size and the process budget. */
  private keep(c: Uint8Array, max: number): void {
    this.keptBytes += c.byteLength;
    const b = this.o.budget;
    if (this.keptBytes > max || (b && !b.take(c.byteLength))) {
      this.kept = undefined;
      return;
    }
    if (b) this.charged += c.byteLength;
    this.kept!.push(Buffer.from(c));
  }

  private async settle(): Promise<SettleOutcomeLabel | undefined> {
    if (!this.opening) return undefined;
    const r = await this.opening;
    if (typeof r === 'string') return r;
    this.drain();
    const usage = await this.usage(r);
    if (this.kept && this.complete && this.decodedOk && !this.lost && this.o.fill)
      this.o.fill.fill(r.record, this.contentType, Buffer.concat(this.kept));
    this.kept = undefined;
    const res: ResponseOutcome = { status: this.status };
    if (usage) res.usage = usage;
    return this.o.settler.finish(r, res);
  }

  /** What the body said; undefined when no body was read (or part of it was lost). */
  private async usage(r: OpenReservation): Promise<Usage | undefined> {
    if (!this.bodySeen || this.lost || !this.extractor) return undefined;
    const decoded = await this.decoder!.end();
    if (decoded.error && decoded.outputBytes === 0) return undefined;
    this.decodedOk = !decoded.error;
    const scan = this.extractor.end();
    // Reported usage wins (resolveUsage): the output text is counted (and collected: scan.text is
    // worked out when read) only when none was reported.
    const text = scan.output ? '' : scan.text.text;
    const n = text.length > 0 ? await this.count(text, r.record.enc) : 0;
    return resolveUsage(scan, () => n);
  }
}
