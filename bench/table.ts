/**
 * The printed report: the runs table, the targets, the store-level and token-counter tables.
 */
import type { RunRow } from './measure.js';
import { fx, p99Ratio, pct, roundRatios, throughputRatio } from './rounds.js';
import { CONCURRENCY } from './settings.js';
import type { StoreRow } from './store-bench.js';
import type { TokenizerRow } from './tokenizer-bench.js';
import type { Check } from './verdicts.js';

export function printTable(report: any): void {
  const out: string[] = [];
  out.push('');
  out.push(
    '| workload | mode | server | checks/s | p50 ms | p99 ms | p999 ms | server CPU | CPU µs/check (vs null) | loadgen CPU | RSS max MB | vs null |',
  );
  out.push('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of report.runs as RunRow[]) {
    const n = (report.runs as RunRow[]).find(
      (x) => x.workload === r.workload && x.mode === r.mode && x.server === 'null',
    )!;
    const l = r.workload === 'mix' ? r.result.smallLatency : r.result.latency;
    const vs =
      r.server === 'null'
        ? '—'
        : r.mode === 'closed'
          ? `${pct(throughputRatio(r, n))}${r.rounds_vs_null && r.rounds_vs_null.length > 1 ? ` (median of ${r.rounds_vs_null.map(pct).join(', ')})` : ''}`
          : `p99 ${fx(p99Ratio(r, n))}${roundRatios(r) ? ` (median of ${roundRatios(r)!.map(fx).join(', ')})` : ''}`;
    out.push(
      `| ${r.workload}${r.workload === 'mix' ? ' (small calls)' : ''} | ${r.mode}${r.rate ? ` @${r.rate}/s` : ` c=${CONCURRENCY}`} | ${r.server} | ${r.result.perSecond} | ${l.p50} | ${l.p99} | ${l.p999} | ${r.server_usage.cpuPercent}%${r.valkey_usage ? ` (+valkey ${r.valkey_usage.cpuPercent}%)` : ''} | ${r.cpu_us_per_check}${r.server === 'null' ? '' : ` (${fx(r.cpu_us_per_check / n.cpu_us_per_check)})`} | ${r.loadgen_cpu_percent}% | ${r.server_usage.rssMaxMb} | ${vs} |`,
    );
  }
  out.push(
    '',
    'Rows: each server\'s median round. "vs null": the median of per-round ratios to the null server\'s',
    'round run next to it (closed: checks/s; open: p99 of small calls), so it need not equal the ratio of',
    "the two rows shown. The mix target below compares tollgate's mix p99 with its own all-small p99.",
  );
  if ((report.runs as RunRow[]).some((r) => r.workload === 'settle'))
    out.push(
      'settle rows: a call is a Check plus its ext_proc stream (response headers, 20 SSE chunks, the usage',
      'chunk and [DONE]), so checks/s and CPU µs/check are per call; closed loops only.',
    );
  out.push('');
  out.push('| target | measured | |');
  out.push('|---|---|---|');
  for (const c of report.summary.checks as Check[])
    out.push(`| ${c.target} | ${c.value} | ${c.pass ? 'PASS' : 'FAIL'} |`);
  if (report.store) {
    out.push('');
    out.push('| store-level (same valkey-server) | ops/s | p50 ms | p99 ms |');
    out.push('|---|---:|---:|---:|');
    for (const s of report.store as StoreRow[])
      out.push(`| ${s.name} | ${s.opsPerSecond} | ${s.latency?.p50 ?? ''} | ${s.latency?.p99 ?? ''} |`);
  }
  if (report.tokenizers) {
    out.push('');
    out.push(
      '| token counter (o200k_base, bench text) | µs per 1 KB prompt | MB/s on 400 KB | load ms | RSS added MB |',
    );
    out.push('|---|---:|---:|---:|---:|');
    for (const t of report.tokenizers as TokenizerRow[])
      out.push(
        `| ${t.impl} | ${t.us_per_1kb_prompt} | ${t.mb_per_s_400kb} | ${t.load_ms} | ${t.rss_added_mb} |`,
      );
    const counts = new Set(
      (report.tokenizers as TokenizerRow[]).map((t) => `${t.tokens_small}/${t.tokens_big}`),
    );
    out.push(
      '',
      counts.size === 1
        ? `(all three counted the same tokens: ${[...counts][0]})`
        : `COUNTS DIFFER: ${[...counts].join(' vs ')}`,
    );
  }
  if (report.soak) out.push('', `soak: ${JSON.stringify(report.soak)}`);
  out.push(
    '',
    `machine: ${report.machine.nproc} cores, ${report.machine.cpu_model}, node ${report.machine.node}, ${report.machine.valkey}; bench took ${report.bench_seconds} s`,
    report.machine.null_checks_per_turn > 0
      ? `null server paced like tollgate: NULL_CHECKS_PER_TURN=${report.machine.null_checks_per_turn}`
      : 'null server answers every check at once (NULL_CHECKS_PER_TURN unset)',
  );
  process.stdout.write(`${out.join('\n')}\n`);
}
