/** Lua scripts from lua/, read once at start-up, addressed by SHA-1. */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Script {
  name: string;
  source: string;
  sha: string;
}

function luaDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'lua', 'check-limits.lua'))) return join(dir, 'lua');
    dir = dirname(dir);
  }
  throw new Error('lua/ directory not found next to the package');
}

const cache = new Map<string, Script>();

export function loadScript(name: string): Script {
  let s = cache.get(name);
  if (!s) {
    const source = readFileSync(join(luaDir(), `${name}.lua`), 'utf8');
    s = { name, source, sha: createHash('sha1').update(source).digest('hex') };
    cache.set(name, s);
  }
  return s;
}
