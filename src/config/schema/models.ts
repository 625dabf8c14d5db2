/**
 * `models`: per model its tokenizer, prices, output reserve, token weight, fallback chain and queue.
 * `"*"` configures every model not listed, and the named models inherit its fields.
 */
import { z } from 'zod';
import { fallbackChain } from '../../policy/fallback.js';
import { usdToMicros } from '../units.js';
import { always, int, mapping, num, oneOf, oneOrMany, problem, str, whenValid } from './fields.js';
import { formatPath } from './format.js';
import { exhaustedFields, queueOnlyWithQueueing } from './queues.js';

/** tiktoken encodings (src/tokens/encoders.ts serves the same list). */
export const ENCODINGS = ['o200k_base', 'cl100k_base', 'p50k_base', 'r50k_base'] as const;
export type Encoding = (typeof ENCODINGS)[number];

/** What a model without settings (and without a `"*"` entry) gets. Each default is here, once. */
export const BUILTIN_MODEL = {
  encoding: 'cl100k_base' as Encoding,
  /** micro-dollars per 1M tokens = USD per 1M tokens × 1e6, integer (exact pricing in integer math). */
  priceInPer1M: 0,
  priceOutPer1M: 0,
  /**
   * Settlement prices (micro-dollars per 1M) of prompt tokens the provider served from its prompt cache
   * and of tokens written to it (Anthropic); -1 = the input price. Reservations always use the input price.
   */
  priceCachedInPer1M: -1,
  priceCacheWritePer1M: -1,
  /** 0 = server.default_max_output_tokens. */
  defaultMaxOutputTokens: 0,
  /** Multiplier for this model's tokens on token limits (premium models count more). */
  tokenWeight: 1,
};

const modelName = str('a model name', /^.{1,256}$/);
const ALIAS = /^[^\s]{1,256}$/;

/** One model's own settings: only what it sets (the rest comes from "*", then BUILTIN_MODEL). */
export const modelSchema = mapping({
  encoding: oneOf(ENCODINGS).optional(),
  price_usd_per_1m: mapping({
    input: num(0).default(0),
    output: num(0).default(0),
    cached_input: num(0).optional(),
    cache_write: num(0).optional(),
  })
    .transform((p) => ({
      priceInPer1M: usdToMicros(p.input),
      priceOutPer1M: usdToMicros(p.output),
      priceCachedInPer1M: p.cached_input === undefined ? -1 : usdToMicros(p.cached_input),
      priceCacheWritePer1M: p.cache_write === undefined ? -1 : usdToMicros(p.cache_write),
    }))
    .optional(),
  fallback: oneOrMany(modelName, 'a model name or a list of model names').optional(),
  default_max_output_tokens: int(1, 10_000_000).optional(),
  token_weight: num(0).optional(),
  ...exhaustedFields,
  /** Other names a request may use for this model (matched like names: case-insensitive, snapshots). */
  aliases: z.array(str('a model name', ALIAS), { error: 'expected a list of model names' }).optional(),
})
  .nullable()
  .superRefine(queueOnlyWithQueueing)
  .transform((m) => ({
    ...(m?.encoding !== undefined && { encoding: m.encoding }),
    ...m?.price_usd_per_1m,
    ...(m?.default_max_output_tokens !== undefined && {
      defaultMaxOutputTokens: m.default_max_output_tokens,
    }),
    ...(m?.token_weight !== undefined && { tokenWeight: m.token_weight }),
    /** Ordered fallback chain after this model (not including itself). */
    fallback: m?.fallback ?? [],
    whenExhausted: m?.when_exhausted,
    queue: m?.queue,
    ...(m?.aliases !== undefined && { aliases: m.aliases }),
  }));

export type ModelFields = z.output<typeof modelSchema>;

/** A model as the rest of tollgate reads it. */
export type ModelConfig = typeof BUILTIN_MODEL & {
  name: string;
  fallback: string[];
  /** when_exhausted: queue — calls to this model that fit no limit go to this queue. */
  queue?: string;
  /** Other names a request may use for this model (matched like names: case-insensitive, snapshots). */
  aliases: string[];
};

export const modelsSchema = z
  .record(z.string(), modelSchema, { error: 'expected a mapping' })
  .superRefine(namesOnce, always)
  .superRefine((models, ctx) => {
    if ((models['*']?.fallback.length ?? 0) > 0)
      problem(ctx, ['*', 'fallback'], 'not supported on "*"; give each model its own fallback');
    const named = Object.keys(models).filter((n) => n !== '*');
    for (const name of named) {
      const { fallback } = models[name];
      fallback.forEach((f, i) => {
        if (!named.includes(f))
          problem(
            ctx,
            fallback.length > 1 ? [name, 'fallback', i] : [name, 'fallback'],
            `expected a model configured under "models" (${named.join(', ')}), got "${f}"`,
          );
      });
      const chain = fallbackChain((n) => (n === '*' ? undefined : models[n]), name);
      if ('cycle' in chain) problem(ctx, [name, 'fallback'], `cycle ${chain.cycle.join(' → ')}`);
    }
  }, whenValid);

/**
 * Names and aliases are unambiguous ignoring case, and `"*"` (every other name) has no aliases. Runs
 * beside field problems, so it reads entries that did not parse too (their valid aliases count).
 */
function namesOnce(models: Record<string, unknown>, ctx: z.core.$RefinementCtx): void {
  const star = (models['*'] as { aliases?: unknown } | null | undefined)?.aliases;
  if (star !== undefined)
    ctx.addIssue({
      code: 'custom',
      path: ['*', 'aliases'],
      input: star,
      message: 'expected no aliases on "*"',
    });
  const owner = new Map<string, string>(); // lower-case name or alias → its path, as shown
  const claim = (key: string, path: (string | number)[]) => {
    const prev = owner.get(key.toLowerCase());
    if (prev)
      problem(ctx, path, `expected a name no other model uses (ignoring case), got "${key}" (also ${prev})`);
    else owner.set(key.toLowerCase(), formatPath(['models', ...path]));
  };
  const named = Object.entries(models).filter(
    ([n, m]) => n !== '*' && (m === null || (typeof m === 'object' && !Array.isArray(m))),
  );
  for (const [name] of named) claim(name, [name]);
  for (const [name, m] of named) {
    const aliases = (m as { aliases?: unknown } | null)?.aliases;
    if (Array.isArray(aliases))
      aliases.forEach((a, i) => {
        if (typeof a === 'string' && ALIAS.test(a)) claim(a, [name, 'aliases', i]);
      });
  }
}

export { fallbackChain };
