/**
 * Budget effect of settlement (docs/settlement.md, "Budget effect"): how many calls a daily budget
 * admits when every call is charged its reservation (prompt + max_tokens, ext_authz alone) versus when
 * each reservation is settled to the output the call really produced (ext_authz + ext_proc).
 *
 * A seeded mix: prompts 200–4,000 tokens, max_tokens 256–4,096, actual output 5–60% of max_tokens (each
 * uniform). Calls arrive one after another for one tenant until the first 429; each is planned, priced
 * and debited by tollgate's own code (src/decision/costs.ts planCall → src/policy/ → MemoryStore's
 * check), and in the settled run settled by src/settle/settler.ts with the usage the provider would
 * report (prompt as counted, output as produced). Two budgets, each alone: 1,000,000 tokens a day, and
 * $10 a day on a model priced like gpt-4o ($2.50 / $10 per 1M input / output tokens).
 *
 * Usage: npm run bench:settle (or node dist/bench/settle-mix.js [seed] [--json]).
 */
import { parseConfigText } from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import { type Priced, planCall } from '../src/decision/costs.js';
import type { Usage } from '../src/dialects/usage/index.js';
import { modelConfig, priceMicros } from '../src/policy/plan.js';
import { Settler } from '../src/settle/settler.js';
import { MemoryStore } from '../src/store/memory.js';
import { Outcome } from '../src/store/types.js';
import { rng } from './workloads.js';

const MODEL = 'gpt-4o';
const BUDGETS = {
  tokens: '{ name: day-tokens, per: tenant, tokens: 1000000, reset: daily }',
  usd: '{ name: day-spend, per: tenant, models: [gpt-4o], usd: 10, reset: daily }',
} as const;
type Budget = keyof typeof BUDGETS;

function config(budget: Budget): Config {
  return parseConfigText(
    [
      'models:',
      `  ${MODEL}: { encoding: o200k_base, price_usd_per_1m: { input: 2.50, output: 10.00 } }`,
      'limits:',
      `  - ${BUDGETS[budget]}`,
    ].join('\n'),
  );
}

interface Call {
  prompt: number;
  maxTokens: number;
  output: number;
}

const uniform = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

/** The seeded call mix (more calls than any budget here admits). */
export function mix(seed: number, n = 5000): Call[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => {
    const prompt = uniform(r, 200, 4000);
    const maxTokens = uniform(r, 256, 4096);
    const share = 0.05 + r() * 0.55;
    return { prompt, maxTokens, output: Math.max(1, Math.round(maxTokens * share)) };
  });
}

interface RunResult {
  admitted: number;
  /** Σ actual prompt + output tokens and micro-dollars of the admitted calls. */
  tokens: number;
  micros: number;
}

/** Calls admitted before the first 429, charged their reservation (settle = false) or settled. */
async function run(budget: Budget, calls: Call[], settle: boolean): Promise<RunResult> {
  const cfg = config(budget);
  // noon UTC on a fixed day: the daily window never ends during the run
  const noon = Date.UTC(2026, 0, 15, 12);
  const store = new MemoryStore(() => noon);
  const settler = new Settler({ store: () => store, config: () => cfg, forget: () => {} });
  const mc = modelConfig(cfg, MODEL);
  const out: RunResult = { admitted: 0, tokens: 0, micros: 0 };
  try {
    for (const c of calls) {
      const priced: Priced = {
        model: MODEL,
        costs: [
          {
            model: MODEL,
            config: mc,
            promptTokens: c.prompt,
            outputTokens: c.maxTokens,
            micros: priceMicros(mc, c.prompt, c.maxTokens),
          },
        ],
        unknownModel: false,
        refused: false,
      };
      const reading = { model: MODEL, estimatedPrompt: 0, estimated: false };
      const built = planCall(cfg, { tenant: 'acme' }, priced, reading, undefined, 'openai.chat');
      const result = await store.check(built.plan);
      if (result.outcome !== Outcome.Allowed) break;
      out.admitted++;
      out.tokens += c.prompt + c.output;
      out.micros += priceMicros(mc, c.prompt, c.output);
      if (!settle) continue;
      const open = await settler.open(built.plan.reservation!.id);
      if (typeof open === 'string') throw new Error(`reservation not found: ${open}`);
      const usage: Usage = {
        prompt: c.prompt,
        cachedPrompt: 0,
        cacheWrite: 0,
        output: c.output,
        reasoning: 0,
        source: 'reported',
        promptReported: true,
      };
      const outcome = await settler.finish(open, { status: 200, usage });
      if (outcome !== 'settled') throw new Error(`settlement: ${outcome}`);
    }
  } finally {
    await store.close();
  }
  return out;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const seed = Number(args.find((a) => /^\d+$/.test(a)) ?? 1);
  const calls = mix(seed);
  const mean = (f: (c: Call) => number) => calls.reduce((s, c) => s + f(c), 0) / calls.length;
  const rows = [];
  for (const budget of ['tokens', 'usd'] as const) {
    const before = await run(budget, calls, false);
    const after = await run(budget, calls, true);
    rows.push({
      budget: budget === 'tokens' ? '1,000,000 tokens/day' : '$10/day (gpt-4o prices)',
      before: before.admitted,
      after: after.admitted,
      ratio: Number((after.admitted / before.admitted).toFixed(2)),
      used_before: budget === 'tokens' ? before.tokens : before.micros,
      used_after: budget === 'tokens' ? after.tokens : after.micros,
    });
  }
  const summary = {
    seed,
    calls_in_mix: calls.length,
    mean_prompt: Math.round(mean((c) => c.prompt)),
    mean_max_tokens: Math.round(mean((c) => c.maxTokens)),
    mean_output: Math.round(mean((c) => c.output)),
    rows,
  };
  if (args.includes('--json')) {
    console.log(JSON.stringify(summary));
    return;
  }
  console.log(
    `seed ${seed}: mean prompt ${summary.mean_prompt}, mean max_tokens ${summary.mean_max_tokens}, ` +
      `mean actual output ${summary.mean_output} tokens`,
  );
  console.log(
    'budget                    | admitted, charged prompt + max_tokens | admitted, settled | ratio',
  );
  for (const r of rows)
    console.log(
      `${r.budget.padEnd(25)} | ${String(r.before).padStart(37)} | ${String(r.after).padStart(17)} | ${r.ratio}`,
    );
  console.log(
    'used by the admitted calls (tokens; micro-dollars): ' +
      rows.map((r) => `${r.budget}: ${r.used_before} before, ${r.used_after} after`).join('; '),
  );
}

await main();
