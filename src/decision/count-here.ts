/**
 * Mid-size bodies (OFFLOAD_BYTES up to PARSE_HERE_BYTES) are parsed on the event loop and counted here
 * when what is new in them is small.
 *
 * A token-worker round trip costs more CPU than the work it moves when most of a prompt was counted
 * before (an agent resending its history): measured ~100–250 µs of CPU per 20–80 KB call, more than
 * parsing the body and hashing its cached texts here. So the prompt is counted here with a budget of
 * fresh work (NEW_CHARS_HERE UTF-16 units of texts not in this thread's count cache). Past it, those
 * texts are counted in a token worker, their counts cached here, and the prompt counted again (now
 * cache hits): the number is the one countPromptTokens gives either way. Short texts (never cached)
 * are counted here when they are few, else the whole prompt is counted in a worker.
 */
import type { ParsedCall } from '../dialects/types.js';
import type { TokenPool } from '../offload/pool.js';
import { type CountOptions, countPromptTokensWithin, primeCounts, uncachedPieces } from '../tokens/count.js';
import { CACHE_MIN_CHARS } from '../tokens/count-cache.js';

/** Bodies below this many bytes are parsed here (above it, in a token worker: body.ts). */
export const PARSE_HERE_BYTES = 256 * 1024;

/** Fresh counting done here per call and encoding, in UTF-16 units (≈ OFFLOAD_BYTES of prose). */
export const NEW_CHARS_HERE = 32 * 1024;

/** The call's prompt tokens by encoding, counted here or, for what is new and large, in a worker. */
export async function countHere(
  call: ParsedCall,
  encodings: readonly string[],
  pool: TokenPool,
  opts: CountOptions,
): Promise<Record<string, number>> {
  const tokens: Record<string, number> = {};
  const manyShort = shortWork(call) > NEW_CHARS_HERE;
  for (const e of encodings) {
    if (tokens[e] !== undefined) continue;
    tokens[e] = manyShort ? await pool.count(call, e, opts) : await countOne(call, e, pool, opts);
  }
  return tokens;
}

async function countOne(call: ParsedCall, e: string, pool: TokenPool, opts: CountOptions): Promise<number> {
  const here = countPromptTokensWithin(call, e, opts, NEW_CHARS_HERE);
  if (here !== undefined) return here;
  const texts = uncachedPieces(call, e);
  if (texts.length > 0) {
    const given = primeCounts(e, texts, await pool.countTexts(texts, e));
    const again = countPromptTokensWithin(call, e, opts, NEW_CHARS_HERE, given);
    if (again !== undefined) return again;
  }
  // what is new is not message text (tool definitions), or the cache could not hold it all
  return pool.count(call, e, opts);
}

/** What countPromptTokens always counts fresh: texts below CACHE_MIN_CHARS, roles and names. */
function shortWork(call: ParsedCall): number {
  const p = call.prompt;
  let n = 0;
  if (p.kind !== 'chat') {
    for (const t of p.texts) if (t.length < CACHE_MIN_CHARS) n += t.length;
    return n;
  }
  for (const m of p.messages) {
    n += 8 + m.role.length + (m.name?.length ?? 0);
    for (const part of m.parts) if (part.length < CACHE_MIN_CHARS) n += part.length;
  }
  return n;
}
