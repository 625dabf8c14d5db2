/**
 * What the answer cache adds to a decision on the exhausted path (Decider.decide in process, memory
 * store, no token workers): a call whose tenant's budget is spent, decided (a) without a cache → 429,
 * (b) with the cache on and no answer for it → 429 after a lookup, (c) with an answer → 200 from the
 * cache. Exact tier only (the semantic tier's cost is dominated by the embedder's round trip).
 *
 * Usage: tsc -p tsconfig.json && node dist/bench/cache-decide-bench.js [runs] → JSON.
 */
import { AnswerCache } from '../src/cache/cache.js';
import { parseConfigText } from '../src/config/load.js';
import { Decider } from '../src/decision/decide.js';
import type { CheckInput } from '../src/decision/types.js';
import { MemoryAnswerStore } from '../src/store/answers.js';
import { MemoryStore } from '../src/store/memory.js';

const YAML = (cache: boolean) => `
identity:
  tenant:
    - header: x-tenant-id
models:
  gpt-4o: { encoding: o200k_base, price_usd_per_1m: { input: 2.5, output: 10 } }
limits:
  - { name: one, per: tenant, requests: 1, every: 1h }
server: { decision_deadline: 1s }
${cache ? 'cache: { ttl: 1h }' : ''}
`;

const body = (i: number) =>
  JSON.stringify({
    model: 'gpt-4o',
    messages: [{ role: 'user', content: `Question number ${i}: what is 2 + 2?` }],
  });
const input = (i: number): CheckInput => ({
  method: 'POST',
  path: '/v1/chat/completions',
  headers: { 'x-tenant-id': 'bench', 'content-type': 'application/json' },
  body: Buffer.from(body(i)),
});

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

type Mode = { name: string; d: Decider; nth: (i: number) => CheckInput; expect: number; t: number[] };

/** The modes interleaved call by call, so a loaded machine's pauses fall on each alike. */
async function run(modes: Mode[], runs: number) {
  for (let i = 0; i < runs; i++)
    for (const m of modes) {
      const t0 = performance.now();
      const r = await m.d.decide(m.nth(i));
      m.t.push((performance.now() - t0) * 1000);
      const status = r.kind === 'deny' ? r.httpStatus : 0;
      if (status !== m.expect) throw new Error(`expected ${m.expect}, got ${status} (${r.reason})`);
    }
  const out: Record<string, unknown> = {};
  for (const m of modes) {
    const w = m.t.slice(Math.floor(runs / 10)); // warm-up
    out[m.name] = {
      p50us: Math.round(pct(w, 50)),
      p90us: Math.round(pct(w, 90)),
      p99us: Math.round(pct(w, 99)),
    };
  }
  return out;
}

async function main() {
  const runs = Number(process.argv[2] ?? 5000);
  const off = new Decider(parseConfigText(YAML(false)), { store: new MemoryStore() });
  await off.decide(input(-1)); // spends the budget
  const cfg = parseConfigText(YAML(true));
  const cache = new AnswerCache(new MemoryAnswerStore());
  const on = new Decider(cfg, { store: new MemoryStore(), cache });
  await on.decide(input(-1));
  // answers for the 'hit' questions (as the response phase would fill them)
  const answer = Buffer.from(
    JSON.stringify({
      id: 'c',
      object: 'chat.completion',
      created: 1,
      model: 'gpt-4o',
      choices: [{ index: 0, message: { role: 'assistant', content: '4' }, finish_reason: 'stop' }],
    }),
  );
  for (let i = 0; i < 100; i++) {
    const q = cache.query(cfg.cache!, { tenant: 'bench' }, 'openai.chat', 'gpt-4o', body(i), {})!;
    await cache.fill(cfg.cache, q.ref, 'openai.chat', 'application/json', answer);
  }
  const modes: Mode[] = [
    { name: 'noCache429', d: off, nth: (i) => input(1000 + i), expect: 429, t: [] },
    { name: 'cacheMiss429', d: on, nth: (i) => input(1000 + i), expect: 429, t: [] },
    { name: 'cacheHit200', d: on, nth: (i) => input(i % 100), expect: 200, t: [] },
  ];
  const report = { node: process.version, runs, ...(await run(modes, runs)) };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
}

await main();
