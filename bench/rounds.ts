/**
 * Interleaved rounds → one row per server (its median round), and the ratios to the null server's
 * round run next to it.
 */
import type { RunRow } from './measure.js';

export const pct = (x: number) => `${Math.round(x * 100)}%`;
export const fx = (x: number) => `${(Math.round(x * 100) / 100).toFixed(2)}×`;

export const median = (xs: number[]) => {
  const a = [...xs].sort((x, y) => x - y);
  return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
};

/**
 * Interleaved rounds (each: one row per server) → per server: the round whose `figure` is the median
 * (with an even number of rounds, the lower of the two middle ones), every round's figure, and for
 * tollgate each round's figure over the null server's figure of the same round (rounded to `digits`).
 */
export function pairRounds(rounds: RunRow[][], figure: (r: RunRow) => number, digits: number) {
  const scale = 10 ** digits;
  return rounds[0].map(({ server }) => {
    const mine = rounds.map((round) => round.find((r) => r.server === server)!);
    const figures = mine.map(figure);
    const row = [...mine].sort((x, y) => figure(x) - figure(y))[(mine.length - 1) >> 1];
    const ratios =
      server === 'null'
        ? undefined
        : rounds.map(
            (round, i) =>
              Math.round((figures[i] / figure(round.find((r) => r.server === 'null')!)) * scale) / scale,
          );
    return { row, figures, ratios };
  });
}

/**
 * One closed-loop row per server from interleaved rounds: the round with the median checks/s (with
 * an even number of rounds, the slower of the two middle ones), carrying every round's checks/s and,
 * for tollgate, the per-round ratio to the null server's. The verdict is the median of those ratios,
 * so it need not equal the row's checks/s over the null row's (the median rounds can differ).
 */
export function medianClosedRows(rounds: RunRow[][]): RunRow[] {
  return pairRounds(rounds, (r) => r.result.perSecond, 3).map(({ row, figures, ratios }) => {
    row.rounds_per_second = figures;
    if (ratios) row.rounds_vs_null = ratios;
    return row;
  });
}

/** Closed-loop checks/s of `c` over the null row `n`: the median per-round ratio when there were rounds. */
export function throughputRatio(c: RunRow, n: RunRow): number {
  const r = c.rounds_vs_null;
  return r && r.length > 1 ? median(r) : c.result.perSecond / n.result.perSecond;
}

/**
 * One open-loop row per server from interleaved rounds: the round with the median p99 (small calls;
 * with an even number of rounds, the lower of the two middle ones), carrying every round's p99 and,
 * for tollgate, the per-round ratio to the null server's p99.
 */
export function medianOpenRows(rounds: RunRow[][]): RunRow[] {
  return pairRounds(rounds, (r) => r.result.smallLatency.p99, 2).map(({ row, figures, ratios }) => {
    row.rounds_p99 = figures;
    if (ratios) row.rounds_p99_vs_null = ratios;
    return row;
  });
}

/** Per-round p99 ratios of an open-loop row measured in more than one round, else undefined. */
export const roundRatios = (o: RunRow) =>
  o.rounds_p99_vs_null && o.rounds_p99_vs_null.length > 1 ? o.rounds_p99_vs_null : undefined;

/** Open-loop p99 of `o` over the null row `no`: the median per-round ratio when there were rounds. */
export function p99Ratio(o: RunRow, no: RunRow): number {
  const rounds = roundRatios(o);
  return rounds ? median(rounds) : o.result.smallLatency.p99 / no.result.smallLatency.p99;
}
