/**
 * Can a body rewrite trust this request's top-level "model" key? JSON.parse keeps the last of duplicate
 * keys and decodes escapes, so `{"model":"cheap","model":"costly"}` and `{"\u006dodel":"costly"}` parse
 * to one model while a textual rewrite (Envoy's Lua filter) sees another. tollgate reroutes a call only
 * when its body names the model once, literally (issue 26: a reroute must not be dodgeable).
 */

export type ModelKeyProblem = 'duplicate-model-key' | 'escaped-model-key';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const MODEL = Buffer.from('"model"');
const ESCAPE_U = Buffer.from('\\u');

/** Occurrences of `needle` in `b`, counting up to `max`. */
function count(b: Buffer, needle: Buffer, max: number): number {
  let n = 0;
  for (let i = b.indexOf(needle); i >= 0 && n < max; i = b.indexOf(needle, i + needle.length)) n++;
  return n;
}

/**
 * The problem with the top-level "model" key of a body that is valid JSON, or undefined when it is
 * written once and literally (or not at all). Fast path: one literal `"model"` and no `\u` anywhere.
 */
export function modelKeyProblem(body: Uint8Array | string): ModelKeyProblem | undefined {
  const b =
    typeof body === 'string' ? Buffer.from(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (count(b, MODEL, 2) <= 1 && b.indexOf(ESCAPE_U) < 0) return undefined;
  return scanTopLevelKeys(b);
}

/** Walk the top-level object's keys (the body is valid JSON: parsed before this is called). */
function scanTopLevelKeys(b: Buffer): ModelKeyProblem | undefined {
  let depth = 0;
  let expectKey = false;
  let literal = 0;
  let escaped = false;
  const n = b.length;
  for (let i = 0; i < n; i++) {
    const c = b[i];
    if (c === QUOTE) {
      let j = i + 1;
      let esc = false;
      while (j < n && b[j] !== QUOTE) {
        if (b[j] === BACKSLASH) {
          esc = true;
          j++;
        }
        j++;
      }
      if (depth === 1 && expectKey) {
        expectKey = false;
        if (!esc) {
          if (j - i === 6 && b.compare(MODEL, 0, 7, i, j + 1) === 0) literal++;
        } else if (JSON.parse(b.toString('utf8', i, j + 1)) === 'model') escaped = true;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      depth++;
      if (depth === 1) expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
    else if (c === 0x2c /* , */ && depth === 1) expectKey = true;
  }
  if (literal + (escaped ? 1 : 0) > 1) return 'duplicate-model-key';
  return escaped ? 'escaped-model-key' : undefined;
}
