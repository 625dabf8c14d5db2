--[[
  adjust-limit: an operator's one-off change to one limit's state for one scope, atomically (the admin
  API's POST /v1/credits and POST /v1/reset, `tollgate credit` / `tollgate reset`; src/admin/).

  KEYS[1]   the limit's state key for the scope (src/store/keys.ts; the same key the check script uses)
  ARGV[1]   op: 'credit' (add ARGV[6] units) or 'reset' (refill to full)
  ARGV[2]   kind       1 = rolling token bucket, 2 = calendar quota, 3 = concurrency (slots)
  ARGV[3]   capacity   units
  ARGV[4]   period     rolling: window in ms; calendar: unit code (1 hourly .. 4 monthly); slots: lease
  ARGV[5]   tz offset  calendar: minutes east of UTC
  ARGV[6]   amount     credit: units to add (> 0)
  ARGV[7]   zone end, ARGV[8] zone next: a calendar quota in a time zone (0 = fixed-offset arithmetic),
            as the check script takes them

    rolling   credit: level + amount, capped at capacity; reset: level = capacity
    calendar  credit: used − amount in the CURRENT window (starting it if none is running); it may go
              below zero: extra budget for this window only (the next window starts at 0 again);
              reset: used = 0 in the current window
    slots     reset: every slot released (calls still in flight no longer count); credit: an error

  Returns { remaining, reset_ms, now_ms }: units left now, ms until the bucket is full (rolling) or the
  window ends (calendar; 0 for slots), and the server's clock.
]]

--- @include "calendar"
--- @include "bucket"

local floor, tonumber = math.floor, tonumber
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local ROLLING, CALENDAR, SLOTS = 1, 2, 3
local key, op = KEYS[1], ARGV[1]
local kind, cap, period, off = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local amount = tonumber(ARGV[6])
local z_end, z_next = tonumber(ARGV[7]), tonumber(ARGV[8])
if z_end == 0 then z_end, z_next = nil, nil end
if op ~= 'credit' and op ~= 'reset' then return redis.error_reply('adjust: unknown op ' .. tostring(op)) end

if kind == ROLLING then
  local level, expires = rolling_read(key, cap, period, now)
  local after = cap
  if op == 'credit' then
    after = level + amount
    if after > cap then after = cap end
  end
  if after ~= level then level = rolling_debit(key, level, level - after, period, expires, now) end
  return { floor(level), math.ceil((cap - level) * period / cap), now }
elseif kind == CALENDAR then
  local used, window_end, starts = calendar_read(key, period, off, z_end, z_next, now)
  local delta = -used
  if op == 'credit' then delta = -amount end
  if delta ~= 0 then used = calendar_debit(key, used, delta, window_end, starts, now) end
  return { floor(cap - used), window_end - now, now }
elseif kind == SLOTS then
  if op == 'credit' then return redis.error_reply('adjust: a concurrency limit takes no credits') end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '+inf')
  return { cap, 0, now }
end
return redis.error_reply('adjust: unknown kind ' .. tostring(kind))
