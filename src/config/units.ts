/** Parsing of the small unit strings the config uses: durations ("500ms", "30s", "1m", "2h", "1d") and percentages. */

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/;
const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Returns milliseconds, or undefined when the value is not a duration. Plain numbers are seconds. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return Math.round(v * 1000);
  if (typeof v !== 'string') return undefined;
  const m = DURATION.exec(v.trim());
  if (!m) return undefined;
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2]]);
  return ms > 0 ? ms : undefined;
}

/** "20%" or 0.2 → 0.2. Returns undefined unless 0 < share < 1. */
export function parseShare(v: unknown): number | undefined {
  let n: number | undefined;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)%$/.exec(v.trim());
    if (m) n = Number(m[1]) / 100;
  }
  return n !== undefined && n > 0 && n < 1 ? n : undefined;
}

/** USD (may be fractional) → integer micro-dollars, exactly for up to 6 decimals. */
export function usdToMicros(usd: number): number {
  return Math.round(usd * 1_000_000);
}
