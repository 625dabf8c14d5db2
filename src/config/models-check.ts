/**
 * Whole-config checks of models (docs/models-and-pricing.md): names and aliases are unambiguous
 * ignoring case, and no `usd` limit can meet a model without a price (it would charge such calls 0).
 */
import type { LimitConfig, ModelConfig } from './types.js';

const unpriced = (m: ModelConfig) => m.priceInPer1M === 0 && m.priceOutPer1M === 0;

export function checkModels(
  models: Map<string, ModelConfig>,
  defaultModel: ModelConfig,
  limits: LimitConfig[],
  problems: string[],
): void {
  const owner = new Map<string, string>(); // lower-case name or alias → "models[...]" path
  const claim = (key: string, path: string) => {
    const prev = owner.get(key.toLowerCase());
    if (prev)
      problems.push(
        `${path}: expected a name no other model uses (ignoring case), got "${key}" (also ${prev})`,
      );
    else owner.set(key.toLowerCase(), path);
  };
  for (const m of models.values()) claim(m.name, `models["${m.name}"]`);
  for (const m of models.values())
    m.aliases.forEach((a, i) => {
      claim(a, `models["${m.name}"].aliases[${i}]`);
    });
  limits.forEach((l, i) => {
    if (l.kind !== 'usd') return;
    const met = l.models
      ? l.models.map((n) => models.get(n)).filter((m) => m !== undefined)
      : [...models.values(), defaultModel];
    for (const m of met)
      if (unpriced(m))
        problems.push(
          `limits[${i}].usd: every model it applies to needs price_usd_per_1m, but models["${m.name}"] has none${m.name === '*' ? ' (any model not listed would be charged 0)' : ''}`,
        );
  });
}
