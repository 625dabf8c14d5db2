/**
 * The Valkey scripts, assembled from lua/ (main scripts + lua/includes/) at build time by
 * scripts/build-lua.mjs into lua.generated.ts: text and SHA-1 ship inside the module, so nothing is
 * read from disk at run time.
 */
import * as generated from './lua.generated.js';

export interface Script {
  name: string;
  source: string;
  sha: string;
}

const byName = new Map<string, Script>(Object.values(generated).map((s) => [s.name, s]));

export function loadScript(name: string): Script {
  const s = byName.get(name);
  if (!s) throw new Error(`no Lua script "${name}" (lua/${name}.lua; run npm run gen)`);
  return s;
}
