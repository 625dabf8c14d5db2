/**
 * The answer cache's costs (docs/cache.md, "Measured"): lookup cost of the exact and the semantic tier
 * at 10k and 100k entries in one scope (the semantic worst case: every entry in the same prompt
 * family), on the memory store and on a valkey-server of its own; memory per entry (memory store);
 * and what a cache lookup adds to the exhausted path of a decision (Decider.decide, memory store).
 *
 * Usage: tsc -p tsconfig.json && node dist/bench/cache-bench.js [entries,…] → a JSON report.
 * Needs valkey-server on PATH for the Valkey rows (skipped otherwise).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { bucketOf, dot, fromBytes, normalize, probes, toBytes } from '../src/cache/lsh.js';
import { ValkeyAnswerStore } from '../src/store/answer-valkey.js';
import { type AnswerStore, MemoryAnswerStore } from '../src/store/answers.js';

const DIM = 1536; // text-embedding-3-small
const ANSWER_BYTES = 1024;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const hex = () => randomBytes(32).toString('hex');

function randomUnit(): Float32Array {
  const v = new Float32Array(DIM);
  for (let i = 0; i < DIM; i++) v[i] = Math.random() - 0.5;
  return normalize(v);
}

async function fill(store: AnswerStore, n: number, vectors: boolean): Promise<string[]> {
  const hashes: string[] = [];
  const value = randomBytes(ANSWER_BYTES);
  const batch: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const hash = hex();
    hashes.push(hash);
    batch.push(
      store.put({
        scope: 'tenant.s',
        kind: 'tenant',
        hash,
        value,
        ttlMs: 3_600_000,
        scopeMaxBytes: 2 ** 40,
        maxBytes: 2 ** 40,
      }),
    );
    if (vectors) {
      const v = randomUnit();
      batch.push(
        store.addVector({
          scope: 'tenant.s',
          family: 'f',
          bucket: bucketOf(v),
          hash,
          vec: toBytes(v),
          ttlMs: 3_600_000,
          maxPerBucket: 1_000_000,
        }),
      );
    }
    if (batch.length >= 512) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  return hashes;
}

async function timeIt(
  runs: number,
  f: () => Promise<unknown>,
): Promise<{ p50us: number; p99us: number; meanUs: number }> {
  for (let i = 0; i < Math.min(50, runs); i++) await f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await f();
    t.push((performance.now() - t0) * 1000);
  }
  return {
    p50us: Math.round(pct(t, 50)),
    p99us: Math.round(pct(t, 99)),
    meanUs: Math.round(t.reduce((a, b) => a + b, 0) / t.length),
  };
}

/** One semantic lookup without the embedding: probe 9 buckets, re-score every candidate exactly. */
const QUERIES = Array.from({ length: 64 }, randomUnit);
let qi = 0;

async function semanticLookup(store: AnswerStore): Promise<number> {
  const q = QUERIES[qi++ % QUERIES.length];
  const found = await store.vectors('tenant.s', 'f', probes(bucketOf(q)), 10_000);
  let best = -1;
  for (const c of found) best = Math.max(best, dot(q, fromBytes(c.vec)));
  return found.length;
}

async function rows(name: string, make: () => AnswerStore, sizes: number[]) {
  const out = [];
  for (const n of sizes) {
    const store = make();
    if ('ready' in store) await (store as ValkeyAnswerStore).ready;
    if (store instanceof ValkeyAnswerStore) await store.client.flushall();
    const hashes = await fill(store, n, true);
    const exact = await timeIt(2000, () => store.get('tenant.s', hashes[Math.floor(Math.random() * n)]));
    let candidates = 0;
    const semantic = await timeIt(200, async () => {
      candidates += await semanticLookup(store);
    });
    out.push({ store: name, entries: n, exact, semantic, candidatesPerLookup: Math.round(candidates / 250) });
    if (name === 'memory') {
      // without LSH: every entry of the family re-scored (what the buckets save)
      const all = await store.vectors(
        'tenant.s',
        'f',
        Array.from({ length: 256 }, (_, i) => i),
        1_000_000,
      );
      const brute = await timeIt(20, async () => {
        const q = QUERIES[qi++ % QUERIES.length];
        let best = -1;
        for (const c of all) best = Math.max(best, dot(q, fromBytes(c.vec)));
        return best;
      });
      out.push({
        store: 'memory, brute force (no LSH)',
        entries: n,
        semantic: brute,
        candidatesPerLookup: all.length,
      });
    }
    await store.close();
  }
  return out;
}

function memoryPerEntry(n: number): number {
  (globalThis as { gc?: () => void }).gc?.();
  const before = process.memoryUsage();
  const store = new MemoryAnswerStore();
  const value = randomBytes(ANSWER_BYTES);
  for (let i = 0; i < n; i++)
    void store.put({
      scope: 'tenant.s',
      kind: 'tenant',
      hash: hex(),
      value,
      ttlMs: 3_600_000,
      scopeMaxBytes: 2 ** 40,
      maxBytes: 2 ** 40,
    });
  (globalThis as { gc?: () => void }).gc?.();
  const after = process.memoryUsage();
  const bytes = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
  if (store.size !== n) throw new Error('fill failed');
  return Math.round(bytes / n - ANSWER_BYTES);
}

/** Valkey's used_memory per answer (beyond its bytes) and per 1536-dimension vector. */
async function valkeyMemory(store: ValkeyAnswerStore, n: number) {
  const used = async () => Number(/used_memory:(\d+)/.exec(await store.client.info('memory'))![1]);
  await store.client.flushall();
  const before = await used();
  await fill(store, n, false);
  const mid = await used();
  const vecs: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const v = randomUnit();
    vecs.push(
      store.addVector({
        scope: 'tenant.s',
        family: 'f',
        bucket: bucketOf(v),
        hash: hex(),
        vec: toBytes(v),
        ttlMs: 3_600_000,
        maxPerBucket: 1_000_000,
      }),
    );
    if (vecs.length >= 512) await Promise.all(vecs.splice(0));
  }
  await Promise.all(vecs);
  const after = await used();
  return {
    entries: n,
    overheadPerAnswerBytes: Math.round((mid - before) / n - ANSWER_BYTES),
    bytesPerVector: Math.round((after - mid) / n),
  };
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

async function main() {
  const sizes = (process.argv[2] ?? '10000,100000').split(',').map(Number);
  const report: Record<string, unknown> = { dim: DIM, answerBytes: ANSWER_BYTES, node: process.version };
  report.memoryOverheadPerEntryBytes = memoryPerEntry(100_000);
  const results = await rows('memory', () => new MemoryAnswerStore(), sizes);
  let server: ReturnType<typeof spawn> | undefined;
  try {
    execFileSync('valkey-server', ['--version']);
    const port = await freePort();
    server = spawn('valkey-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
      stdio: 'ignore',
    });
    await new Promise((r) => setTimeout(r, 300));
    const vs = new ValkeyAnswerStore({ url: `valkey://127.0.0.1:${port}`, timeoutMs: 5000 }, 'bench');
    await vs.ready;
    report.valkeyMemory = await valkeyMemory(vs, 20_000);
    await vs.close();
    results.push(
      ...(await rows(
        'valkey',
        () => new ValkeyAnswerStore({ url: `valkey://127.0.0.1:${port}`, timeoutMs: 5000 }, 'bench'),
        sizes,
      )),
    );
  } catch (e) {
    report.valkey = `skipped: ${(e as Error).message}`;
  } finally {
    server?.kill();
  }
  report.results = results;
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await main();
