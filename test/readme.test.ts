/** The configuration examples in README.md and docs/ are real: every tollgate YAML block there validates. */
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';

const docsDir = new URL('../docs/', import.meta.url);
const docFiles = existsSync(docsDir)
  ? readdirSync(docsDir)
      .filter((f) => f.endsWith('.md'))
      .map((f) => new URL(f, docsDir))
  : [];
const readme = [new URL('../README.md', import.meta.url), ...docFiles]
  .map((u) => readFileSync(u, 'utf8'))
  .join('\n');
const blocks = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
const TOP = /^(identity|models|limits|queues|tool_weights|mode|server|store|settle|cache):/m;
const configs = blocks.filter((b) => TOP.test(b) && !/http_filters|^keys:/m.test(b));

describe('README and docs/ configuration examples', () => {
  it('has examples to check', () => {
    expect(configs.length).toBeGreaterThanOrEqual(8);
  });
  it.each(configs.map((c, i) => [i, c]))('example %i validates', (_i, text) => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-readme-'));
    writeFileSync(join(dir, 'keys.yaml'), 'keys: {}\n');
    const file = join(dir, 'tollgate.yaml');
    writeFileSync(file, text as string);
    expect(() => loadConfig(file)).not.toThrow();
  });
  it('the shipped tollgate.yaml validates', () => {
    expect(loadConfig(new URL('../tollgate.yaml', import.meta.url).pathname).limits.length).toBe(4);
  });
});
