/**
 * Token counter comparison (part of `npm run bench`, or alone: node dist/bench/tokenizer-bench.js):
 * the reference (tiktoken, WASM), gpt-tokenizer (pure JS, the previous hot path) and tollgate's
 * shared-table counter (src/tokens/bpe.ts), on the bench workload's text with o200k_base.
 * Each implementation runs in its own child process so its load time and resident memory are its own.
 * Reports µs per ~1 KB prompt, MB/s on a 400 KB prompt, load time and RSS added, and checks that all
 * three give the same counts.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { text } from './workloads.js';

export interface TokenizerRow {
  impl: 'tiktoken' | 'gpt-tokenizer' | 'tollgate';
  load_ms: number;
  rss_added_mb: number;
  us_per_1kb_prompt: number;
  mb_per_s_400kb: number;
  tokens_small: number;
  tokens_big: number;
}

const ENCODING = 'o200k_base';

async function measure(impl: TokenizerRow['impl']): Promise<TokenizerRow> {
  const smalls = Array.from({ length: 500 }, (_, i) => text(850, 1000 + i));
  const big = text(400_000, 7);
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  let count: (s: string) => number;
  const require = createRequire(import.meta.url);
  if (impl === 'tiktoken') {
    const enc = (require('tiktoken') as typeof import('tiktoken')).get_encoding(ENCODING);
    count = (s) => enc.encode_ordinary(s).length;
  } else if (impl === 'gpt-tokenizer') {
    const api = require(`gpt-tokenizer/cjs/encoding/${ENCODING}`) as {
      countTokens(t: string, o: unknown): number;
    };
    const opts = { disallowedSpecial: new Set<string>() };
    count = (s) => api.countTokens(s, opts);
  } else {
    const bpe = await import('../src/tokens/bpe.js');
    const table = bpe.view(ENCODING, bpe.buildTable(ENCODING));
    count = (s) => bpe.countBpe(table, s);
  }
  count('warm up');
  const loadMs = performance.now() - t0;
  let tokensSmall = 0;
  for (const s of smalls) tokensSmall += count(s); // warm the JIT
  let best = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 5; round++) {
    const a = performance.now();
    for (const s of smalls) count(s);
    best = Math.min(best, (performance.now() - a) / smalls.length);
  }
  let bestBig = Number.POSITIVE_INFINITY;
  let tokensBig = 0;
  for (let round = 0; round < 3; round++) {
    const a = performance.now();
    tokensBig = count(big);
    bestBig = Math.min(bestBig, performance.now() - a);
  }
  const r = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    impl,
    load_ms: r(loadMs, 0),
    rss_added_mb: r((process.memoryUsage().rss - rss0) / 1048576),
    us_per_1kb_prompt: r((best * 1000 * 1024) / 850),
    mb_per_s_400kb: r(big.length / 1e6 / (bestBig / 1000)),
    tokens_small: tokensSmall,
    tokens_big: tokensBig,
  };
}

/** Run every implementation in its own process (from the parent). */
export function runTokenizerBench(): TokenizerRow[] {
  const self = fileURLToPath(import.meta.url);
  return (['tiktoken', 'gpt-tokenizer', 'tollgate'] as const).map(
    (impl) => JSON.parse(execFileSync(process.execPath, [self, impl], { encoding: 'utf8' })) as TokenizerRow,
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const impl = process.argv[2] as TokenizerRow['impl'] | undefined;
  if (impl) process.stdout.write(`${JSON.stringify(await measure(impl))}\n`);
  else console.log(JSON.stringify(runTokenizerBench(), null, 2));
}
