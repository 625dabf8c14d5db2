/**
 * The Lua scripts are assembled at build time (scripts/build-lua.mjs): includes expanded once, the
 * text and SHA-1 checked in as src/store/lua.generated.ts. This file proves the checked-in module is
 * what lua/ assembles to today, that includes behave (expanded once, cycles refused), and that the
 * SHA the store sends with EVALSHA is the one a real valkey-server computes on SCRIPT LOAD.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// @ts-expect-error plain ESM build script without type declarations
import { assemble, generate } from '../scripts/build-lua.mjs';
import * as generated from '../src/store/lua.generated.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => vk?.close());

describe('Lua scripts', () => {
  it('src/store/lua.generated.ts is current (run `npm run gen` after editing lua/)', () => {
    const checkedIn = readFileSync(new URL('../src/store/lua.generated.ts', import.meta.url), 'utf8');
    expect(checkedIn).toBe(generate());
  });

  it('every script SHA equals what valkey-server returns for SCRIPT LOAD', async () => {
    const scripts = Object.values(generated);
    expect(scripts.length).toBeGreaterThan(0);
    for (const s of scripts) {
      expect(s.source).not.toMatch(/--- @include/);
      expect(await vk.client.script('LOAD', s.source)).toBe(s.sha);
    }
  });

  it('expands an include once, nested includes too, and refuses a cycle', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-lua-'));
    mkdirSync(join(dir, 'includes'));
    writeFileSync(
      join(dir, 'main.lua'),
      '--- @include "a"\n--- @include "b"\n--- @include "a"\nreturn f()\n',
    );
    writeFileSync(join(dir, 'includes', 'a.lua'), 'local function f() return g() end\n');
    writeFileSync(join(dir, 'includes', 'b.lua'), '--- @include "a"\nlocal function g() return 1 end\n');
    const text: string = assemble('main.lua', dir);
    expect(text.match(/local function f/g)).toHaveLength(1);
    expect(text.match(/local function g/g)).toHaveLength(1);
    writeFileSync(join(dir, 'includes', 'a.lua'), '--- @include "b"\n');
    expect(() => assemble('main.lua', dir)).toThrow(/include cycle/);
  });
});
