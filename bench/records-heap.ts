/**
 * Heap held by the in-memory store's reservation records (store.memory_max_records), in one process:
 * a MemoryStore as the server makes it (bench/configs/bench.yaml, its three limits; plans built by
 * src/decision/costs.ts planCall for 1,000 tenants, like a bench `small` call), N allowed checks that
 * each record a reservation, then every record read back once (as settlement reads it).
 * Reports the V8 heap in use after a full GC before and after the records (and once they are dropped),
 * the time of a forced full GC without and with them, µs per check (planning excluded: plans are built
 * before the clock starts), per read of a record, then per check at the bound (each drops the oldest
 * record) and per settlement (a read and the settle).
 *
 * Usage (from the repository root): node --expose-gc dist/bench/records-heap.js [n] [--json] (n: 20,000)
 */
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { parseConfigText } from '../src/config/load.js';
import { type Priced, planCall } from '../src/decision/costs.js';
import { modelConfig, priceMicros } from '../src/policy/plan.js';
import { MemoryStore } from '../src/store/memory.js';
import { type CheckPlan, Outcome } from '../src/store/types.js';
import { TENANTS } from './workloads.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');

const MB = (b: number) => Math.round((b / 1024 / 1024) * 100) / 100;

function fullGc(): number {
  const t = performance.now();
  gc!();
  return performance.now() - t;
}

function plans(n: number): CheckPlan[] {
  const cfg = parseConfigText(readFileSync('bench/configs/bench.yaml', 'utf8'));
  const model = 'gpt-4o-mini';
  const mc = modelConfig(cfg, model);
  const out: CheckPlan[] = [];
  for (let i = 0; i < n; i++) {
    const prompt = 200 + (i % 50);
    const priced: Priced = {
      model,
      costs: [
        { model, config: mc, promptTokens: prompt, outputTokens: 256, micros: priceMicros(mc, prompt, 256) },
      ],
      unknownModel: false,
      refused: false,
    };
    const reading = { model, estimatedPrompt: 0, estimated: false };
    const id = { tenant: `tenant-${(i * 7919) % TENANTS}` };
    out.push(planCall(cfg, id, priced, reading, undefined, 'openai.chat').plan);
  }
  return out;
}

/** A store's first calls (compiled code: checks, reads, settlements), on other keys; nothing of it stays. */
async function warmUp(): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const store = new MemoryStore(Date.now);
    const warm = plans(2000);
    for (const p of warm) store.checkSync(p);
    const keys = warm.map((p) => p.keys[p.reservation!.key]);
    for (const k of keys) await store.reservation(k);
    await settleAll(store, keys);
    await store.close();
  }
}

/** `n` checks that each record a reservation, then each record read once: µs per check and per read. */
async function fill(s: MemoryStore, n: number): Promise<{ checkUs: number; readUs: number; keys: string[] }> {
  const ps = plans(n);
  const keys = ps.map((p) => p.keys[p.reservation!.key]);
  let t = performance.now();
  for (const p of ps) if (s.checkSync(p).outcome !== Outcome.Allowed) throw new Error('denied');
  const checkUs = ((performance.now() - t) * 1000) / n;
  t = performance.now();
  let entries = 0;
  for (const k of keys) entries += (await s.reservation(k))?.entries.length ?? 0;
  const readUs = ((performance.now() - t) * 1000) / n;
  if (entries !== 3 * n) throw new Error(`read ${entries} entries, expected ${3 * n}`);
  return { checkUs, readUs, keys };
}

/** Settle every record to its reservation (a read, then the settle that reads it again): µs each. */
async function settleAll(s: MemoryStore, keys: string[]): Promise<number> {
  const t = performance.now();
  for (const key of keys) {
    const reservation = (await s.reservation(key))!;
    const r = await s.settle({ key, reservation, actual: reservation.entries.map((e) => e.cost) });
    if (r.outcome !== 'settled') throw new Error(r.outcome);
  }
  return ((performance.now() - t) * 1000) / keys.length;
}

const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const n = Number(args.find((a) => /^\d+$/.test(a)) ?? 20_000);
  await warmUp();
  let s: MemoryStore | undefined = new MemoryStore(Date.now);
  s.setMaxRecords(n);
  fullGc();
  const gcEmptyMs = median([fullGc(), fullGc(), fullGc()]);
  const before = getHeapStatistics().used_heap_size;
  const { checkUs, readUs } = await fill(s, n); // the plans die with the calls, as in the server
  fullGc();
  const gcMs = median([fullGc(), fullGc(), fullGc()]);
  const after = getHeapStatistics().used_heap_size;
  // as many again: each check now drops the oldest record (the bound), and those records are settled
  const bound = await fill(s, n);
  const settleUs = await settleAll(s, bound.keys);
  await s.close();
  s = undefined;
  fullGc();
  const dropped = getHeapStatistics().used_heap_size;
  const row = {
    n,
    heapBeforeMB: MB(before),
    heapAfterMB: MB(after),
    heapDroppedMB: MB(dropped),
    // the store's whole growth (its limit states too: 3,000 keys), and the store alone
    perRecordB: Math.round((after - before) / n),
    storeB: Math.round((after - dropped) / n),
    fullGcEmptyMs: Math.round(gcEmptyMs * 100) / 100,
    fullGcMs: Math.round(gcMs * 100) / 100,
    checkUs: Math.round(checkUs * 10) / 10,
    readUs: Math.round(readUs * 10) / 10,
    checkAtBoundUs: Math.round(bound.checkUs * 10) / 10,
    settleUs: Math.round(settleUs * 10) / 10,
  };
  console.log(args.includes('--json') ? JSON.stringify(row) : row);
}

await main();
