/**
 * Where hashing beats counting (node dist/bench/count-cache-bench.js): for texts of each size, the
 * shared-table counter's µs per text against a count-cache hit (SHA-256 digest key + LRU lookup), on
 * the bench workload's text with o200k_base. CACHE_MIN_CHARS (src/tokens/count-cache.ts) is set from
 * this: the smallest size where a hit costs clearly less than a count.
 */
import { fileURLToPath } from 'node:url';
import { CountCache } from '../src/tokens/count-cache.js';
import { getCounter } from '../src/tokens/encoders.js';
import { text } from './workloads.js';

export interface CacheBenchRow {
  chars: number;
  count_us: number;
  hit_us: number;
  miss_overhead_us: number;
}

function best(reps: number, f: () => void): number {
  let b = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const a = performance.now();
    for (let i = 0; i < reps; i++) f();
    b = Math.min(b, ((performance.now() - a) * 1000) / reps);
  }
  return Math.round(b * 100) / 100;
}

export function runCacheBench(sizes = [32, 64, 128, 256, 512, 1024, 4096, 16384, 65536]): CacheBenchRow[] {
  const enc = getCounter('o200k_base');
  const rows: CacheBenchRow[] = [];
  for (const chars of sizes) {
    const texts = Array.from({ length: 64 }, (_, i) => text(chars, 9000 + i).slice(0, chars));
    const reps = Math.max(64, Math.floor(2_000_000 / chars));
    let k = 0;
    const count_us = best(reps, () => enc.count(texts[k++ & 63]));
    const cache = new CountCache();
    for (const t of texts) cache.count(0, t, enc.count);
    const hit_us = best(reps, () => cache.count(0, texts[k++ & 63], enc.count));
    const cold = new CountCache(1); // every lookup misses: hash + count + insert
    const miss_us = best(reps, () => cold.count(0, texts[k++ & 63], enc.count));
    rows.push({ chars, count_us, hit_us, miss_overhead_us: Math.round((miss_us - count_us) * 100) / 100 });
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.table(runCacheBench());
