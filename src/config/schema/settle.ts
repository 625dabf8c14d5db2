/**
 * `settle`: the response phase (Envoy ext_proc). How long a reservation waits for its settlement, what
 * an upstream error is charged, and the optional billing export stream (docs/settlement.md).
 */
import type { z } from 'zod';
import { bool, duration, int, mapping, oneOf, str } from './fields.js';

export const DEFAULT_RESERVATION_TTL_MS = 15 * 60_000;
export const DEFAULT_USAGE_STREAM_MAX_LENGTH = 1_000_000;
export const DEFAULT_SETTLE_BUFFERED_BYTES = 256 << 20;

export const settleSchema = mapping({
  /**
   * Record each allowed call's reservation for the response phase. Off: calls are charged their full
   * reservation and never settled, and nothing is written per call (no ext_proc configured).
   */
  enabled: bool().default(true),
  /** A reservation not settled within this is left as charged and its record expires. */
  reservation_ttl: duration('15m').prefault('15m'),
  /**
   * A 2xx answer without usage (stream cut, include_usage not set): count its streamed output with the
   * model's tokenizer (`count`), or let the reservation stand (`keep`: never less than the provider
   * bills, e.g. for reasoning models whose hidden reasoning tokens are not streamed).
   */
  without_usage: oneOf(['count', 'keep']).default('count'),
  /** Upstream answered non-2xx: refund tokens and dollars in full, or keep the prompt's share. */
  on_upstream_error: oneOf(['refund', 'keep_prompt']).default('refund'),
  /**
   * Response bytes all ext_proc streams of the process may hold at once (bodies being read for their
   * usage); past it a stream stops reading and its reservation stands.
   */
  max_buffered_bytes: int(1 << 20, 2 ** 40).default(DEFAULT_SETTLE_BUFFERED_BYTES),
  /** One Valkey stream entry per settled call, for billing export. Off unless given. */
  usage_stream: mapping({
    enabled: bool().default(true),
    /** Stream key (under store.prefix): <prefix>:u:<name>. */
    name: str('a short name of letters, digits, _ or -', /^[A-Za-z0-9_-]{1,64}$/).default('usage'),
    /** Entries kept (approximate trimming, XADD MAXLEN ~). */
    max_length: int(1000, 1_000_000_000).default(DEFAULT_USAGE_STREAM_MAX_LENGTH),
    /** Identity dimensions written with each entry (their values; API-key ids are digests). */
    dimensions: str('an identity dimension name', /^[A-Za-z0-9_-]{1,64}$/)
      .array()
      .optional(),
  }).optional(),
}).transform((s) => ({
  enabled: s.enabled,
  reservationTtlMs: s.reservation_ttl,
  onUpstreamError: s.on_upstream_error,
  withoutUsage: s.without_usage,
  maxBufferedBytes: s.max_buffered_bytes,
  usageStream: s.usage_stream?.enabled
    ? {
        name: s.usage_stream.name,
        maxLength: s.usage_stream.max_length,
        dimensions: s.usage_stream.dimensions,
      }
    : undefined,
}));

export type SettleConfig = z.output<typeof settleSchema>;
