/** Calendar window arithmetic shared by the memory store and tests (mirrors window_end in lua/check-limits.lua). */

const H = 3_600_000;
const D = 86_400_000;

/** End (ms since epoch, exclusive) of the calendar window containing nowMs. unit: 1 hourly, 2 daily, 3 weekly (Monday start), 4 monthly. */
export function windowEnd(nowMs: number, unit: number, tzOffsetMin: number): number {
  const off = tzOffsetMin * 60_000;
  const local = nowMs + off;
  if (unit === 1) return (Math.floor(local / H) + 1) * H - off;
  const days = Math.floor(local / D);
  if (unit === 2) return (days + 1) * D - off;
  if (unit === 3) {
    const dow = (((days + 3) % 7) + 7) % 7;
    return (days - dow + 7) * D - off;
  }
  const d = new Date(days * D);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - off;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Offset of an IANA zone from UTC at the given instant, in minutes east. */
export function tzOffsetMinutes(timeZone: string, atMs: number): number {
  let fmt = formatters.get(timeZone);
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
    });
    formatters.set(timeZone, fmt);
  }
  const parts = fmt.formatToParts(new Date(atMs));
  const get = (t: string) => Number(parts.find((p) => p.type === t)?.value);
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'));
  return Math.round((asUtc - Math.floor(atMs / 60_000) * 60_000) / 60_000);
}
