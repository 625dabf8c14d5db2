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

/** Sends one command (an argument array) on a store's connection. */
export type SendCommand = (args: (string | number)[]) => Promise<unknown>;

/**
 * EVALSHA `script` over `send`; on NOSCRIPT (a restarted or flushed server) load it, check the SHA the
 * server computed, and run it once more. For the scripts off the check path (settle, adjust); the check
 * itself is batched per event-loop turn (valkey.ts).
 */
export async function evalScript(
  send: SendCommand,
  script: Script,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  const argv = ['EVALSHA', script.sha, keys.length, ...keys, ...args];
  try {
    return await send(argv);
  } catch (err) {
    if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
    const sha = (await send(['SCRIPT', 'LOAD', script.source])) as string;
    if (sha !== script.sha) throw new Error(`script SHA mismatch: server ${sha}, local ${script.sha}`);
    return send(argv);
  }
}
