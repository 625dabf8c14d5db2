/**
 * Where a check's body CPU goes, stage by stage (node dist/bench/body-stages.js [workloads]): for the
 * bodies the load generator sends (bench/streams.ts; default small,medium,rag,agent), the µs per
 * call of each stage tollgate runs on a body, one thread, best of 5 passes:
 *   decode     Buffer → string (bodyText)
 *   json       JSON.parse of that string
 *   walk       the dialect walk of the parsed JSON (parseCall)
 *   hash       the count cache's SHA-256 key of every text it would look up (≥ CACHE_MIN_CHARS)
 *   bpe        counting the prompt with no cache (countText of every piece, o200k_base)
 *   modelKey   modelKeyProblem (the reroute's duplicate-key check)
 *   worker     one token-worker round trip (parse + count of the same body, cache warm) minus the
 *              same work done inline (cache warm): what moving a body to the worker adds, all threads
 * The gRPC decode and write, the decision's store call and GC are not in it: profile the server for
 * those (node --cpu-prof dist/src/cli.js serve, driven by dist/bench/loadgen.js).
 */
import { fileURLToPath } from 'node:url';
import { decodeCheckInput } from '../src/authz/grpc/wire.js';
import { bodyText } from '../src/dialects/body.js';
import { modelKeyProblem } from '../src/dialects/model-key.js';
import { parseCall } from '../src/dialects/parse.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { TokenPool } from '../src/offload/pool.js';
import { clearCountCache, countPromptTokens } from '../src/tokens/count.js';
import { CACHE_MIN_CHARS, digestKey } from '../src/tokens/count-cache.js';
import { countText, getCounter } from '../src/tokens/encoders.js';
import { requestStream } from './streams.js';
import type { WorkloadName } from './workloads.js';

const ENC = 'o200k_base';
const OPTS = { imageTokens: 765 };
const PLAN = { byModel: { 'gpt-4o-mini': [ENC] }, other: [ENC] };

export interface StageRow {
  workload: string;
  kb: number;
  decode: number;
  json: number;
  walk: number;
  hash: number;
  bpe: number;
  modelKey: number;
  worker: number;
}

/** Best µs per call of `f` over the bodies, 5 passes. */
function best<T>(items: T[], f: (x: T) => unknown): number {
  let b = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const t = performance.now();
    for (const x of items) f(x);
    b = Math.min(b, ((performance.now() - t) * 1000) / items.length);
  }
  return Math.round(b * 10) / 10;
}

async function bestAsync<T>(items: T[], f: (x: T) => Promise<unknown>): Promise<number> {
  let b = Number.POSITIVE_INFINITY;
  for (let r = 0; r < 5; r++) {
    const c = process.cpuUsage();
    for (const x of items) await f(x);
    const u = process.cpuUsage(c);
    b = Math.min(b, (u.user + u.system) / items.length);
  }
  return Math.round(b);
}

function texts(call: ParsedCall): string[] {
  const p = call.prompt;
  return p.kind === 'chat' ? p.messages.flatMap((m) => m.parts) : p.texts;
}

export async function runStages(workloads: WorkloadName[], n = 64): Promise<StageRow[]> {
  const enc = getCounter(ENC);
  const pool = new TokenPool(1);
  await pool.warm([ENC]);
  const rows: StageRow[] = [];
  try {
    for (const w of workloads) {
      const s = requestStream(w, 7);
      const bodies = Array.from({ length: n }, () => Buffer.from(decodeCheckInput(s.next().bytes).body!));
      const strs = bodies.map((b) => bodyText(b));
      const jsons = strs.map((t) => JSON.parse(t) as unknown);
      const calls = jsons.map((j) => parseCall('openai.chat', j));
      if (calls.some(isParseError)) throw new Error(`${w}: a body did not parse`);
      const parsed = calls as ParsedCall[];
      const inline = async (b: Buffer) => {
        const c = parseCall('openai.chat', JSON.parse(bodyText(b)));
        if (!isParseError(c)) countPromptTokens(c, ENC, OPTS);
        modelKeyProblem(b);
      };
      const worker = (b: Buffer) => pool.parseAndCount('openai.chat', b, undefined, PLAN, OPTS, false);
      const kb = bodies.reduce((a, b) => a + b.length, 0) / n / 1024;
      rows.push({
        workload: w,
        kb: Math.round(kb * 10) / 10,
        decode: best(bodies, bodyText),
        json: best(strs, JSON.parse),
        walk: best(jsons, (j) => parseCall('openai.chat', j)),
        hash: best(parsed, (c) => {
          for (const t of texts(c)) if (t.length >= CACHE_MIN_CHARS) digestKey(0, t);
        }),
        bpe: best(parsed, (c) => {
          for (const t of texts(c)) countText(enc, t);
        }),
        modelKey: best(bodies, modelKeyProblem),
        worker: (await bestAsync(bodies, worker)) - (await bestAsync(bodies, inline)),
      });
      clearCountCache();
    }
  } finally {
    await pool.close();
  }
  return rows;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const names = (process.argv[2] ?? 'small,medium,rag,agent').split(',') as WorkloadName[];
  console.table(await runStages(names));
}
