--[[
  Calendar windows: when the window containing an instant ends, for hourly (1), daily (2), weekly
  (3, Monday) and monthly (4) quotas. window_end is fixed-offset arithmetic (UTC, or minutes east of
  UTC); calendar_end prefers the window ends the caller computed for a time zone (daylight saving
  time moves a zone's boundaries and the script has no time-zone database). Mirrors
  src/store/calendar.ts.
]]
-- (math.floor spelled out: test/trust-model.test.ts runs this function on its own)
local function window_end(now_ms, unit, off_min)
  local off = off_min * 60000
  local lm = now_ms + off
  if unit == 1 then return (math.floor(lm / 3600000) + 1) * 3600000 - off end
  local days = math.floor(lm / 86400000)
  if unit == 2 then return (days + 1) * 86400000 - off end
  if unit == 3 then
    local dow = (days + 3) % 7 -- 1970-01-01 was a Thursday; Monday = 0
    return (days - dow + 7) * 86400000 - off
  end
  -- monthly: civil date from day number, then day number of the 1st of next month (H. Hinnant)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  m = m + 1
  if m > 12 then m = 1; y = y + 1 end
  if m <= 2 then y = y - 1 end
  local era2 = math.floor(y / 400)
  local yoe2 = y - era2 * 400
  local mp2 = m > 2 and m - 3 or m + 9
  local doe2 = yoe2 * 365 + math.floor(yoe2 / 4) - math.floor(yoe2 / 100) + math.floor((153 * mp2 + 2) / 5)
  return (era2 * 146097 + doe2 - 719468) * 86400000 - off
end

-- The end of the calendar window containing now_ms: the caller's zoned ends when given, else the
-- fixed-offset arithmetic (UTC, or a store clock far from the caller's). Mirrors calendarEnd in
-- src/store/calendar.ts.
local function calendar_end(now_ms, unit, off_min, z_end, z_next)
  if z_end then
    if now_ms < z_end then return z_end end
    if now_ms < z_next then return z_next end
  end
  return window_end(now_ms, unit, off_min)
end
