/**
 * Settlement pricing: what a reservation records about the call (per candidate, written by the check
 * script with the debit), and what each debited limit costs once the provider has said what the call
 * used. Pure: the response phase (src/settle/) reads the usage, the store applies the difference.
 */
import type { Config, LimitKind, ModelConfig } from '../config/types.js';
import type { Identity } from '../identity/identity.js';
import type { CandidateCost, PlanMeta } from './plan.js';
import type { ReservedEntry } from './plan-types.js';

const UNIT: Record<LimitKind, string> = { requests: 'r', tokens: 't', usd: 'u', concurrent: 'c' };

/** What a reservation remembers of its call (JSON in the record; short keys: it lives in Valkey). */
export interface ReservationRecord {
  /** Chosen model (configured name) and the call's dialect (how to read its response). */
  m: string;
  d: string;
  /** Tokenizer for counting streamed output when the provider reports no usage. */
  enc: string;
  /** Reserved prompt and output tokens; whether the prompt count was an estimate. */
  p: number;
  o: number;
  pe?: 1;
  /** Prices, micro-dollars per 1M: input, output, cached input, cache write (−1: the input price). */
  $: [number, number, number, number];
  /** Token weight on token limits. */
  w: number;
  /** Per plan entry of the candidate, its limit kind: r(equests) t(okens) u(sd) c(oncurrent). */
  u: string;
  /** Identity dimensions for the usage export (settle.usage_stream.dimensions). */
  dims?: Record<string, string>;
  /** When reserved (ms, epoch). */
  at: number;
  /** The answer cache's entry this call's answer fills (src/cache/); absent: not cached (no-store). */
  c?: CacheRef;
}

/** Where a call's answer goes in the answer cache: scope id and kind, key hash, stream requested. */
export interface CacheRef {
  s: string;
  k: string;
  h: string;
  /** The semantic tier: the prompt family and the last user turn (embedded when filled). */
  f?: string;
  q?: string;
}

/** One record per candidate (the check script keeps the chosen one). */
export function reservationRecords(
  cfg: Config,
  id: Identity,
  costs: CandidateCost[],
  meta: PlanMeta[][],
  dialect: string,
  estimatedPrompt: boolean,
  now: number,
  cache?: CacheRef,
): string[] {
  const names = cfg.settle.usageStream?.dimensions;
  let dims: Record<string, string> | undefined;
  if (names) {
    dims = {};
    for (const n of names) if (id[n] !== undefined) dims[n] = String(id[n]);
  }
  return costs.map((c, ci) => {
    const m = c.config;
    const rec: ReservationRecord = {
      m: c.model,
      d: dialect,
      enc: m.encoding,
      p: c.promptTokens,
      o: c.outputTokens,
      ...(estimatedPrompt && { pe: 1 as const }),
      $: [m.priceInPer1M, m.priceOutPer1M, m.priceCachedInPer1M, m.priceCacheWritePer1M],
      w: m.tokenWeight,
      u: meta[ci].map((x) => UNIT[x.limit.kind]).join(''),
      ...(dims && { dims }),
      at: now,
      // the requested model's answer only: a fallback's answer is not that model's
      ...(cache && ci === 0 && { c: cache }),
    };
    return JSON.stringify(rec);
  });
}

/** What the call used, by kind (prompt includes cached and cache-write tokens; output includes reasoning). */
export interface ActualTokens {
  prompt: number;
  cachedPrompt: number;
  cacheWrite: number;
  output: number;
  reasoning: number;
}

/** Integer micro-dollars for actual usage, each kind at its own price, rounded up (exact). */
export function actualMicros(price: ReservationRecord['$'], t: ActualTokens): number {
  const [pin, pout, pcached, pwrite] = price;
  const cached = Math.min(t.cachedPrompt, t.prompt);
  const write = Math.min(t.cacheWrite, t.prompt - cached);
  const plain = t.prompt - cached - write;
  const num =
    BigInt(plain) * BigInt(pin) +
    BigInt(cached) * BigInt(pcached < 0 ? pin : pcached) +
    BigInt(write) * BigInt(pwrite < 0 ? pin : pwrite) +
    BigInt(t.output) * BigInt(pout);
  const q = num / 1_000_000n;
  return Number(num % 1_000_000n === 0n ? q : q + 1n);
}

export interface Settlement {
  /** Per reserved entry: units used. */
  actual: number[];
  tokens: ActualTokens;
  micros: number;
  /** Reserved token units (prompt + output) and micro-dollars, for the reserved ÷ actual metrics. */
  reservedTokens: number;
  reservedMicros: number;
}

/**
 * What each debited limit costs for `tokens` actually used: requests unchanged, tokens
 * ⌈(prompt + output) × weight⌉, dollars at each kind's price; concurrency slots cost their slot (the
 * store releases it).
 */
export function settlement(
  rec: ReservationRecord,
  entries: ReservedEntry[],
  tokens: ActualTokens,
): Settlement {
  const micros = actualMicros(rec.$, tokens);
  const weighted = Math.ceil((tokens.prompt + tokens.output) * rec.w);
  const actual = entries.map((e) => {
    const unit = rec.u[e.index];
    if (unit === 't') return weighted;
    if (unit === 'u') return micros;
    return e.cost;
  });
  const reservedMicros = actualMicros(rec.$, {
    prompt: rec.p,
    cachedPrompt: 0,
    cacheWrite: 0,
    output: rec.o,
    reasoning: 0,
  });
  return { actual, tokens, micros, reservedTokens: rec.p + rec.o, reservedMicros };
}

/** Tokens charged when the provider answered non-2xx: nothing, or the prompt (settle.on_upstream_error). */
export function upstreamErrorTokens(cfg: Config, rec: ReservationRecord): ActualTokens {
  const prompt = cfg.settle.onUpstreamError === 'keep_prompt' ? rec.p : 0;
  return { prompt, cachedPrompt: 0, cacheWrite: 0, output: 0, reasoning: 0 };
}

export function parseRecord(text: string): ReservationRecord | undefined {
  try {
    const r = JSON.parse(text) as ReservationRecord;
    return typeof r === 'object' && r !== null && typeof r.u === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

export type { ModelConfig };
