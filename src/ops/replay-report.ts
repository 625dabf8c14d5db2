/**
 * `tollgate replay`'s text output: the totals, then one row per limit with calls denied, rerouted,
 * would-queue, shadow refusals and the first time it bound; with --compare, the two configs' numbers
 * side by side (a limit only one config has shows "-" under the other).
 */
import type { LimitStats, ReplayReport } from './replay.js';

export interface NamedReport {
  /** The config file the calls were replayed through. */
  config: string;
  report: ReplayReport;
}

const COLS = ['denied', 'rerouted', 'would queue', 'shadow', 'first bound'] as const;

function cells(s: LimitStats | undefined): string[] {
  if (!s) return COLS.map(() => '-');
  return [s.denied, s.rerouted, s.queued, s.shadow, s.first_bound ?? 'never'].map(String);
}

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) =>
    r
      .map((v, c) => (c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c])))
      .join('  ')
      .trimEnd(),
  );
}

function totals(n: NamedReport): string {
  const r = n.report;
  return `${n.config}: ${r.calls} calls, ${r.allowed} allowed, ${r.rerouted} rerouted, ${r.denied} denied, ${r.queued} would queue${r.other ? `, ${r.other} other` : ''}`;
}

/** The report(s) as text: one config, or two side by side (the candidate first). */
export function formatReplay(runs: NamedReport[]): string {
  const first = runs[0].report;
  const lines = [`replayed ${first.calls} calls from ${first.from ?? '-'} to ${first.to ?? '-'}`];
  for (const n of runs) lines.push(totals(n));
  const names = [...new Set(runs.flatMap((n) => n.report.limits.map((l) => l.limit)))];
  const tag = (i: number) => (runs.length > 1 ? `[${i === 0 ? 'A' : 'B'}] ` : '');
  const head = ['limit', ...runs.flatMap((_, i) => COLS.map((c, j) => (j === 0 ? tag(i) + c : c)))];
  const rows = [head];
  for (const name of names)
    rows.push([name, ...runs.flatMap((n) => cells(n.report.limits.find((l) => l.limit === name)))]);
  lines.push('', ...table(rows));
  if (runs.length > 1) lines.push('', ...runs.map((n, i) => `[${i === 0 ? 'A' : 'B'}] ${n.config}`));
  return `${lines.join('\n')}\n`;
}
