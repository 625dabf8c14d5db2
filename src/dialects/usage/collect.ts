/**
 * The bounded output-text collector and the final resolution of a UsageScan into a Usage.
 */
import type { CollectedText, Usage, UsageScan, UsageSource } from './types.js';

export const DEFAULT_MAX_TEXT_CHARS = 1 << 20;

export class TextCollector {
  private pieces: string[] = [];
  private chars = 0;
  private droppedAscii = 0;
  private droppedNonAscii = 0;
  private seen = false;

  constructor(private readonly maxChars: number = DEFAULT_MAX_TEXT_CHARS) {}

  add(piece: unknown): void {
    if (typeof piece !== 'string') return;
    this.seen = true;
    if (piece.length === 0) return;
    if (this.chars + piece.length <= this.maxChars) {
      this.pieces.push(piece);
      this.chars += piece.length;
      return;
    }
    // Past the bound: keep nothing, remember enough to estimate (whole pieces only, so that no
    // multi-byte character or surrogate pair is split).
    for (let i = 0; i < piece.length; i++) {
      const c = piece.charCodeAt(i);
      if (c < 0x80) this.droppedAscii++;
      else if (c >= 0xdc00 && c < 0xe000) {
        // low surrogate: its high half was already counted as one character
      } else this.droppedNonAscii++;
    }
  }

  /** Adds bytes of content that could not be decoded into pieces (e.g. an over-long SSE line). */
  addOpaqueBytes(n: number): void {
    if (n <= 0) return;
    this.seen = true;
    this.droppedNonAscii += n; // one token per byte: the upper bound of byte-level BPE
  }

  result(): CollectedText {
    return {
      text: this.pieces.join(''),
      droppedAsciiBytes: this.droppedAscii,
      droppedNonAsciiChars: this.droppedNonAscii,
      any: this.seen,
    };
  }
}

/**
 * Token estimate for content past the collection bound: ASCII at 4 bytes per token (rounded up), every
 * non-ASCII character (or opaque byte) one token. English runs ~4 characters per token in cl100k/o200k
 * and CJK about one token per character, so for natural text this does not under-count.
 */
export function estimateTokens(t: Pick<CollectedText, 'droppedAsciiBytes' | 'droppedNonAsciiChars'>): number {
  return Math.ceil(t.droppedAsciiBytes / 4) + t.droppedNonAsciiChars;
}

/**
 * Resolves what an extractor saw into a Usage. `count` tokenizes output text with the model's
 * encoding (e.g. `(t) => countText(getCounter(enc), t)` from src/tokens); it is only called when the
 * provider reported no final output usage and some content was collected.
 */
export function resolveUsage(scan: UsageScan, count: (text: string) => number): Usage {
  if (scan.output)
    return usage(scan, Math.max(scan.output.output, scan.outputFloor), scan.output.reasoning, 'reported');
  const t = scan.text;
  const hasText = t.any || t.droppedAsciiBytes > 0 || t.droppedNonAsciiChars > 0;
  if (!hasText && !scan.prompt && scan.outputFloor === 0) {
    // Nothing seen at all. A JSON body too large to buffer, with no usage in its tail: estimate its
    // bytes as output (an over-count: it includes the JSON syntax) rather than let a huge answer pass.
    if (scan.jsonOverflow) return usage(scan, Math.ceil(scan.bytes / 4), 0, 'counted');
    return usage(scan, 0, 0, 'none');
  }
  const counted = (t.text.length > 0 ? count(t.text) : 0) + estimateTokens(t);
  return usage(scan, Math.max(counted, scan.outputFloor), 0, 'counted');
}

/** A Usage with the scan's prompt counts (a literal: an object spread here costs microseconds on Node 20). */
function usage(scan: UsageScan, output: number, reasoning: number, source: UsageSource): Usage {
  const p = scan.prompt;
  return {
    prompt: p?.prompt ?? 0,
    cachedPrompt: p?.cachedPrompt ?? 0,
    cacheWrite: p?.cacheWrite ?? 0,
    promptReported: p !== undefined,
    output,
    reasoning,
    source,
  };
}
