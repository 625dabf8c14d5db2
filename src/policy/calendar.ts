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

/**
 * Time-zone calendar windows (issue 19 item 10). A zone's offset changes with daylight saving time, so
 * a window's end is not "start + a day in the start's offset": it is the first instant whose local wall
 * time reaches the next boundary (the next hour, midnight, Monday, the 1st). Computed here with Intl and
 * handed to both stores as epoch milliseconds (the Lua script has no time-zone database): the end of
 * the window containing the caller's clock and the end of the window after it, so a store whose clock
 * is a little ahead still finds its window.
 */
export interface ZonedWindow {
  /** End (exclusive) of the window containing the instant it was computed for. */
  end: number;
  /** End of the following window. */
  next: number;
  /** Offset at that instant (minutes east): only for a store clock outside both windows. */
  offMin: number;
}

const MINUTE = 60_000;
const offMs = (tz: string, t: number) => tzOffsetMinutes(tz, t) * MINUTE;

/** The wall time (as UTC ms) of the boundary after the wall time `w`, for a calendar unit. */
function nextWallBoundary(w: number, unit: number): number {
  if (unit === 1) return (Math.floor(w / H) + 1) * H;
  const days = Math.floor(w / D);
  if (unit === 2) return (days + 1) * D;
  if (unit === 3) return (days - ((((days + 3) % 7) + 7) % 7) + 7) * D;
  const d = new Date(days * D);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** The first instant after `from` whose wall time in `tz` is at least `B` (wall(from) < B). */
function firstAtWall(tz: string, B: number, from: number): number {
  const o1 = offMs(tz, from);
  const c1 = B - o1;
  const o2 = offMs(tz, c1);
  if (o2 === o1) return c1;
  const c2 = B - o2;
  if (c2 > from && offMs(tz, c2) === o2) return c2;
  // B does not exist on the wall (skipped by a spring-forward): the boundary is the transition itself,
  // found to the minute (offsets change on whole minutes).
  let lo = Math.floor(Math.max(from, Math.min(c1, c2)) / MINUTE) * MINUTE;
  let hi = c1;
  while (hi - lo > MINUTE) {
    const mid = lo + Math.floor((hi - lo) / (2 * MINUTE)) * MINUTE;
    if (offMs(tz, mid) === o1) lo = mid;
    else hi = mid;
  }
  return hi;
}

/** The zoned window containing `t` (computed from scratch; see zonedWindow for the cached one). */
export function computeZonedWindow(t: number, unit: number, tz: string): ZonedWindow {
  const off = offMs(tz, t);
  const end = firstAtWall(tz, nextWallBoundary(t + off, unit), t);
  const afterEnd = end + offMs(tz, end);
  const next = firstAtWall(tz, nextWallBoundary(afterEnd, unit), end);
  return { end, next, offMin: off / MINUTE };
}

interface Cached extends ZonedWindow {
  from: number;
}
const zoned = new Map<string, (Cached | undefined)[]>();

/** The zoned window containing `t`, recomputed only when `t` leaves the cached one. */
export function zonedWindow(t: number, unit: number, tz: string): ZonedWindow {
  let byUnit = zoned.get(tz);
  if (!byUnit) {
    if (zoned.size >= 1000) zoned.clear(); // zones come from the config: bounded anyway
    byUnit = [];
    zoned.set(tz, byUnit);
  }
  const c = byUnit[unit];
  if (c && t >= c.from && t < c.end) return c;
  const w = computeZonedWindow(t, unit, tz);
  byUnit[unit] = { ...w, from: t };
  return w;
}

/**
 * The end of the calendar window containing `now` (mirrors calendar_end in lua/check-limits.lua):
 * the precomputed zoned ends when given (end > 0), else the fixed-offset arithmetic.
 */
export function calendarEnd(now: number, unit: number, offMin: number, end: number, next: number): number {
  if (end > 0) {
    if (now < end) return end;
    if (now < next) return next;
  }
  return windowEnd(now, unit, offMin);
}
