/**
 * The settlement of one call: find its reservation, price what the provider says it used, and have the
 * store refund (or debit) each limit the difference, once. Knows nothing of Envoy: the ext_proc stream
 * (ext-proc.ts) feeds it the response's status and usage.
 *
 * Outcomes (tollgate_settlements_total{outcome}):
 *   settled         the provider reported usage; each limit now holds what the call really cost
 *   estimated       no usage reported: output counted from the streamed content with the model's
 *                   tokenizer (the prompt is the reported one, else the reserved count)
 *   upstream_error  the provider answered non-2xx: tokens and dollars refunded in full
 *                   (settle.on_upstream_error: refund) or down to the prompt (keep_prompt)
 *   kept            nothing usable seen (empty or cut body): the reservation stands, slots released
 *   duplicate       already settled: nothing changes
 *   expired         the record is gone and its id is older than settle.reservation_ttl
 *   unmatched       no such reservation (another store's, forged, or the record was dropped)
 *   failed          the store could not be reached: the reservation stands (its slots free at lease end)
 * Request counts never change: a call that reached the provider was a request.
 */
import type { Config } from '../config/types.js';
import { reservationIdTime } from '../decision/reservation.js';
import type { Usage } from '../dialects/usage/index.js';
import {
  type ActualTokens,
  parseRecord,
  type ReservationRecord,
  type Settlement,
  settlement,
  upstreamErrorTokens,
} from '../policy/settle.js';
import { reservationKey, usageStreamKey } from '../store/keys.js';
import type { Reservation, Store } from '../store/types.js';

export type SettleOutcomeLabel =
  | 'settled'
  | 'estimated'
  | 'upstream_error'
  | 'kept'
  | 'duplicate'
  | 'expired'
  | 'unmatched'
  | 'failed';

/** A reservation found, ready to settle once the response is read. */
export interface OpenReservation {
  id: string;
  key: string;
  /** The store that holds it (the shared one, or the local fallback's). */
  store: Store;
  reservation: Reservation;
  record: ReservationRecord;
}

/** What the response said. */
export interface ResponseOutcome {
  /** The upstream :status (undefined when no response headers were seen). */
  status?: number;
  /** What the body said the call used; undefined when no body was read. */
  usage?: Usage;
}

/** One settlement, for metrics, logs and the export stream. */
export interface SettledEvent {
  outcome: SettleOutcomeLabel;
  id: string;
  model?: string;
  settlement?: Settlement;
  /** Token units refunded (negative: debited beyond the reservation). */
  refundedTokens?: number;
  /** The store's remaining per debited limit, when settled. */
  remaining?: number[];
}

export interface SettlerDeps {
  /** The shared store, and the local fallback store (records made while Valkey was down). */
  store: () => Store;
  local?: () => Store | undefined;
  config: () => Config;
  /** Forget this replica's cached denies on these limit keys (src/decision/deny-cache.ts). */
  forget: (keys: readonly string[]) => void;
  onSettled?: (e: SettledEvent) => void;
}

export class Settler {
  constructor(private readonly deps: SettlerDeps) {}

  /** The reservation `id` names, or why there is none to settle. */
  async open(id: string): Promise<OpenReservation | SettleOutcomeLabel> {
    const cfg = this.deps.config();
    if (reservationIdTime(id) === undefined) return this.done({ outcome: 'unmatched', id });
    const key = reservationKey(cfg.store.prefix, id);
    const stores = [this.deps.store(), this.deps.local?.()].filter((s) => s !== undefined);
    let failed = false;
    for (const store of stores) {
      // each store on its own: a record made by the local fallback is found while Valkey is down
      let reservation: Reservation | undefined;
      try {
        reservation = await store.reservation(key);
      } catch {
        failed = true;
        continue;
      }
      if (!reservation) continue;
      if (reservation.settled) return this.done({ outcome: 'duplicate', id });
      const record = parseRecord(reservation.record);
      if (!record) return this.done({ outcome: 'unmatched', id });
      return { id, key, store, reservation, record };
    }
    if (failed) return this.done({ outcome: 'failed', id });
    const made = reservationIdTime(id)!;
    const expired = Date.now() - made >= cfg.settle.reservationTtlMs;
    return this.done({ outcome: expired ? 'expired' : 'unmatched', id });
  }

  /** Settle an open reservation to what the response said. */
  async finish(r: OpenReservation, res: ResponseOutcome): Promise<SettleOutcomeLabel> {
    const cfg = this.deps.config();
    const { outcome, tokens } = judge(cfg, r.record, res);
    const s = settlement(r.record, r.reservation.entries, tokens);
    // kept: every limit keeps its reservation (only the slots are released)
    const actual = outcome === 'kept' ? r.reservation.entries.map((e) => e.cost) : s.actual;
    const stream = cfg.settle.usageStream;
    try {
      const result = await r.store.settle({
        key: r.key,
        reservation: r.reservation,
        actual,
        export:
          stream && r.store.kind === 'valkey' && outcome !== 'kept'
            ? {
                stream: usageStreamKey(cfg.store.prefix, stream.name, cfg.store.topology === 'cluster'),
                maxLength: stream.maxLength,
                fields: exportFields(r, outcome, s),
              }
            : undefined,
      });
      if (result.outcome === 'duplicate') return this.done({ outcome: 'duplicate', id: r.id });
      if (result.outcome === 'missing') return this.done({ outcome: 'expired', id: r.id });
      this.deps.forget(r.reservation.entries.map((e) => e.key));
      return this.done({
        outcome,
        id: r.id,
        model: r.record.m,
        settlement: outcome === 'kept' ? undefined : s,
        refundedTokens: outcome === 'kept' ? 0 : s.reservedTokens - (s.tokens.prompt + s.tokens.output),
        remaining: result.remaining,
      });
    } catch {
      return this.done({ outcome: 'failed', id: r.id, model: r.record.m });
    }
  }

  private done(e: SettledEvent): SettleOutcomeLabel {
    this.deps.onSettled?.(e);
    return e.outcome;
  }
}

/** The outcome and the tokens to charge for a response. */
function judge(
  cfg: Config,
  rec: ReservationRecord,
  res: ResponseOutcome,
): { outcome: SettleOutcomeLabel; tokens: ActualTokens } {
  if (res.status !== undefined && (res.status < 200 || res.status > 299))
    return { outcome: 'upstream_error', tokens: upstreamErrorTokens(cfg, rec) };
  const u = res.usage;
  if (!u || u.source === 'none' || (u.source === 'counted' && cfg.settle.withoutUsage === 'keep'))
    return {
      outcome: 'kept',
      tokens: { prompt: rec.p, cachedPrompt: 0, cacheWrite: 0, output: rec.o, reasoning: 0 },
    };
  const tokens: ActualTokens = u.promptReported
    ? {
        prompt: u.prompt,
        cachedPrompt: u.cachedPrompt,
        cacheWrite: u.cacheWrite,
        output: u.output,
        reasoning: u.reasoning,
      }
    : { prompt: rec.p, cachedPrompt: 0, cacheWrite: 0, output: u.output, reasoning: u.reasoning };
  return { outcome: u.source === 'reported' ? 'settled' : 'estimated', tokens };
}

/** The usage export entry's fields (docs/settlement.md, "Usage export"). */
function exportFields(r: OpenReservation, outcome: SettleOutcomeLabel, s: Settlement): string[] {
  const t = s.tokens;
  const f = [
    'ts',
    String(Date.now()),
    'id',
    r.id,
    'model',
    r.record.m,
    'outcome',
    outcome,
    'prompt',
    String(t.prompt),
    'cached',
    String(t.cachedPrompt),
    'cache_write',
    String(t.cacheWrite),
    'output',
    String(t.output),
    'reasoning',
    String(t.reasoning),
    'micros',
    String(s.micros),
  ];
  for (const [k, v] of Object.entries(r.record.dims ?? {})) f.push(`dim.${k}`, v);
  return f;
}
