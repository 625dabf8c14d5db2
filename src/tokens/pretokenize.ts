/**
 * Pre-tokenizers: how each encoding splits text into pre-tokens before byte-pair merging.
 * PATTERNS are tiktoken's pat_str spelled for JavaScript (the general path); ASCII_MATCHERS decide
 * the commonest pre-tokens of cl100k_base and o200k_base from ASCII character classes without the
 * regex, and return NEED_REGEX where a non-ASCII character decides. test/tokens-fast.test.ts proves
 * both give tiktoken's pre-tokens (and counts) on a corpus and on random strings.
 */
/**
 * Pre-tokenizer patterns: tiktoken's pat_str for each encoding, spelled for JavaScript. Two spellings
 * differ from the Rust originals so that JavaScript matches exactly what tiktoken matches:
 *  - `\s` / `\S` are explicit Unicode White_Space classes (Rust's `\s`): JavaScript's `\s` also
 *    matches U+FEFF and misses U+0085;
 *  - `(?i:'s|'t|...)` is written out with case classes (JavaScript has no inline flags), including
 *    U+017F (long s), which Rust's Unicode case folding matches for `s`.
 */
const WS = String.raw`\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000`;
const S = `[${WS}]`;
const NS = `[^${WS}]`;
const CONTRACTION_CI = String.raw`'(?:[sS\u017f]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD])`;
export const PATTERNS: Record<string, string> = {
  r50k_base: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${S}+(?!${NS})|${S}+`,
  p50k_base: String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^${WS}\p{L}\p{N}]+|${S}+(?!${NS})|${S}+`,
  cl100k_base: String.raw`${CONTRACTION_CI}|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^${WS}\p{L}\p{N}]+[\r\n]*|${S}*[\r\n]+|${S}+(?!${NS})|${S}+`,
  o200k_base: String.raw`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:${CONTRACTION_CI})?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:${CONTRACTION_CI})?|\p{N}{1,3}| ?[^${WS}\p{L}\p{N}]+[\r\n/]*|${S}*[\r\n]+|${S}+(?!${NS})|${S}+`,
};

// ASCII character classes for the hand-written pre-tokenizers below.
const UP = 1; // A-Z
const LO = 2; // a-z
const DIG = 3; // 0-9
const SP = 4; // \t \v \f and space: White_Space, not a newline
const NL = 5; // \r \n
const OTH = 6; // everything else: punctuation, symbols, control characters
const CLASS = new Uint8Array(128).fill(OTH);
for (let c = 65; c <= 90; c++) CLASS[c] = UP;
for (let c = 97; c <= 122; c++) CLASS[c] = LO;
for (let c = 48; c <= 57; c++) CLASS[c] = DIG;
for (const c of [9, 11, 12, 32]) CLASS[c] = SP;
CLASS[10] = NL;
CLASS[13] = NL;

/** Sentinel returned by the ASCII matchers: a non-ASCII character decides this pre-token. */
export const NEED_REGEX = -1;

/** Class of text[i]: 0 at the end, NEED_REGEX for non-ASCII. */
function cls(text: string, i: number): number {
  if (i >= text.length) return 0;
  const c = text.charCodeAt(i);
  return c < 128 ? CLASS[c] : NEED_REGEX;
}

/** End of an optional case-insensitive contraction ('s 't 're 've 'm 'll 'd) at i, or i. */
function contraction(text: string, i: number): number {
  if (text.charCodeAt(i) !== 39) return i;
  const a0 = text.charCodeAt(i + 1);
  if (a0 >= 128) return NEED_REGEX; // U+017F (long s) folds to s
  const a = a0 | 0x20;
  if (a === 115 || a === 116 || a === 109 || a === 100) return i + 2; // s t m d
  const b = text.charCodeAt(i + 2) | 0x20;
  if ((a === 114 && b === 101) || (a === 118 && b === 101) || (a === 108 && b === 108)) return i + 3;
  return i;
}

/** `\p{N}{1,3}` at i (text[i] is an ASCII digit). */
function digits(text: string, i: number): number {
  let j = i + 1;
  while (j < i + 3) {
    const c = cls(text, j);
    if (c === DIG) j++;
    else if (c === NEED_REGEX) return NEED_REGEX;
    else break;
  }
  return j;
}

/** End of a run of class k starting at i; NEED_REGEX if the run ends at a non-ASCII character. */
function run(text: string, i: number, k: number): number {
  let c = cls(text, i);
  while (c === k) c = cls(text, ++i);
  return c === NEED_REGEX ? NEED_REGEX : i;
}

/** End of a run of classes a or b starting at i (NEED_REGEX as above). */
function run2(text: string, i: number, a: number, b: number): number {
  let c = cls(text, i);
  while (c === a || c === b) c = cls(text, ++i);
  return c === NEED_REGEX ? NEED_REGEX : i;
}

/** `[\r\n]*` (o200k: `[\r\n/]*`) after i. */
function newlinesAfter(text: string, i: number, slash: boolean): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 10 || c === 13 || (slash && c === 47)) i++;
    else return i;
  }
}

/**
 * The whitespace alternatives shared by cl100k and o200k at i (text[i] is White_Space):
 * `\s*[\r\n]+ | \s+(?!\S) | \s+`.
 */
function whitespace(text: string, i: number): number {
  let j = i;
  let lastNl = -1;
  for (;;) {
    const c = cls(text, j);
    if (c === NL) lastNl = j;
    else if (c !== SP) {
      if (c === NEED_REGEX) return NEED_REGEX;
      break;
    }
    j++;
  }
  if (lastNl >= 0) return lastNl + 1;
  if (j >= text.length || j - i === 1) return j;
  return j - 1;
}

/** End of the o200k_base pre-token at i when ASCII decides it, else NEED_REGEX. */
function o200kAscii(text: string, i: number): number {
  const c = cls(text, i);
  let start = i;
  if (c === OTH || c === SP) {
    // [^\r\n\p{L}\p{N}]? before letters
    const n = cls(text, i + 1);
    if (n === NEED_REGEX) return NEED_REGEX;
    if (n === UP || n === LO) start = i + 1;
    else if (c === OTH || (n === OTH && text.charCodeAt(i) === 32)) {
      // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
      const e = run(text, c === OTH ? i : i + 1, OTH);
      return e === NEED_REGEX ? NEED_REGEX : newlinesAfter(text, e, true);
    } else return whitespace(text, i);
  } else if (c === DIG) return digits(text, i);
  else if (c === NL) return whitespace(text, i);
  else if (c !== UP && c !== LO) return NEED_REGEX;
  // [\p{Lu}...]*[\p{Ll}...]+ | [\p{Lu}...]+[\p{Ll}...]*, then an optional contraction
  const u = run(text, start, UP);
  if (u === NEED_REGEX) return NEED_REGEX;
  const l = run(text, u, LO);
  if (l === NEED_REGEX) return NEED_REGEX;
  return contraction(text, l);
}

/** End of the cl100k_base pre-token at i when ASCII decides it, else NEED_REGEX. */
function cl100kAscii(text: string, i: number): number {
  const c = cls(text, i);
  if (c === OTH) {
    const k = contraction(text, i);
    if (k !== i) return k;
  }
  if (c === OTH || c === SP) {
    const n = cls(text, i + 1);
    if (n === NEED_REGEX) return NEED_REGEX;
    if (n === UP || n === LO) return run2(text, i + 1, UP, LO);
    if (c === OTH || (n === OTH && text.charCodeAt(i) === 32)) {
      const e = run(text, c === OTH ? i : i + 1, OTH);
      return e === NEED_REGEX ? NEED_REGEX : newlinesAfter(text, e, false);
    }
    return whitespace(text, i);
  }
  if (c === UP || c === LO) return run2(text, i, UP, LO);
  if (c === DIG) return digits(text, i);
  if (c === NL) return whitespace(text, i);
  return NEED_REGEX;
}

export const ASCII_MATCHERS: Record<string, ((text: string, i: number) => number) | undefined> = {
  o200k_base: o200kAscii,
  cl100k_base: cl100kAscii,
};
