/**
 * What a provider's response says the call used, normalised across dialects.
 *
 * Conventions (the same for every dialect, whatever the provider's own fields mean):
 *  - `prompt` is every input token, including `cachedPrompt` (served from the provider's prompt cache)
 *    and `cacheWrite` (written to it; Anthropic's cache_creation_input_tokens): both are subsets of it.
 *    OpenAI's prompt_tokens / input_tokens and Gemini's promptTokenCount already include cached tokens;
 *    Anthropic's input_tokens excludes cache reads and writes, so they are added. Gemini's
 *    toolUsePromptTokenCount (input produced by tool use) is added to `prompt`.
 *  - `output` is every generated token, including `reasoning` (a subset of it). OpenAI's
 *    completion_tokens / output_tokens and Anthropic's output_tokens already include reasoning;
 *    Gemini's candidatesTokenCount excludes thoughtsTokenCount, so they are added.
 */
export type UsageSource = 'reported' | 'counted' | 'none';

export interface Usage {
  prompt: number;
  cachedPrompt: number;
  cacheWrite: number;
  output: number;
  reasoning: number;
  /**
   * reported: the provider's final usage was seen (prompt and output as reported);
   * counted: no final output usage — `output` was counted from the streamed content with the caller's
   *   tokenizer (plus an estimate for content past the collection bound; never less than any partial
   *   count the provider reported); `prompt` is the reported one when `promptReported`, else 0;
   * none: nothing usable was seen (empty, garbage, or truncated body): the reservation should stand.
   */
  source: UsageSource;
  /** Whether `prompt`/`cachedPrompt`/`cacheWrite` come from the provider (else 0: use the reserved estimate). */
  promptReported: boolean;
}

/** What an extractor saw, before the collected text is counted (see resolveUsage in collect.ts). */
export interface UsageScan {
  /** Reported input counts, when any usage carrying them was seen. */
  prompt?: { prompt: number; cachedPrompt: number; cacheWrite: number };
  /** Final reported output (and its reasoning part), when a final usage was seen. */
  output?: { output: number; reasoning: number };
  /** Largest partial output count reported before the end (e.g. Anthropic message_start, Gemini chunks). */
  outputFloor: number;
  /**
   * Output content collected for counting (bounded; see CollectedText). Worked out when first read
   * (SSE events that carry no usage are parsed then): a caller with the final `output` need not.
   */
  text: CollectedText;
  /** Bytes fed in (after content decoding). */
  bytes: number;
  /** Whether the body was understood at all (a JSON value parsed, or at least one SSE event parsed). */
  understood: boolean;
  /** The body was JSON larger than the buffering cap: only its tail was scanned for usage. */
  jsonOverflow: boolean;
}

/** Output text collected for counting when the provider reports no output usage. */
export interface CollectedText {
  /** The content, up to the collection bound (whole pieces, in order). */
  text: string;
  /** Content past the bound, not kept: its token count is estimated (see estimateTokens in collect.ts). */
  droppedAsciiBytes: number;
  droppedNonAsciiChars: number;
  /** Whether any content piece (even an empty one) was seen. */
  any: boolean;
}

export interface UsageExtractorOptions {
  /** A whole JSON body is buffered up to this many bytes (default 4 MiB); past it only a tail is kept. */
  maxJsonBytes?: number;
  /** Tail kept past maxJsonBytes, and of over-long SSE lines, scanned for the usage object (default 256 KiB). */
  tailBytes?: number;
  /** Longest SSE line buffered whole (default 4 MiB); longer lines keep only their tail. */
  maxLineBytes?: number;
  /** Collected output text bound in UTF-16 code units (default 1 Mi); past it text is estimated. */
  maxTextChars?: number;
}

/** A streaming usage extractor: feed the (decoded) response body in arbitrary chunks, then end(). */
export interface UsageExtractor {
  push(chunk: Uint8Array): void;
  /** Ends the body (idempotent) and returns what was seen. */
  end(): UsageScan;
}
