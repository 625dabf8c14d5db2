--[[
  Limit state: reading a limit's key once per call and debiting it.
    rolling (token bucket)  fields v = level (units available), t = last update (ms), x = when the key
                            expires (ms): at least one period after the last debit, when the bucket is
                            full again, so losing the key loses nothing
    calendar quota          fields u = used units, e = window end (ms); the key expires 1 s after it
  `now` is the server's clock (TIME) in ms.
]]

-- The level of a rolling bucket now, and when its key expires (0 if unknown).
local function rolling_read(key, cap, period, now)
  local h = redis.call('HMGET', key, 'v', 't', 'x')
  local v, ts = tonumber(h[1]), tonumber(h[2])
  local level = cap
  if v and ts then
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end -- server clock stepped back: no refill, no harm
    -- a bucket a settlement left below zero refills from there (it may need longer than a period);
    -- otherwise a whole period refills it exactly
    if elapsed < period or v < 0 then
      level = v + elapsed * cap / period
      if level > cap then level = cap end
    end
  end
  return level, tonumber(h[3]) or 0
end

-- Units used in a calendar quota's current window, its end, and whether this call starts the window.
local function calendar_read(key, unit, off_min, z_end, z_next, now)
  local h = redis.call('HMGET', key, 'u', 'e')
  local used, e = tonumber(h[1]), tonumber(h[2])
  if used and e and now < e then return used, e, false end
  return 0, calendar_end(now, unit, off_min, z_end, z_next), true
end

-- ms until a rolling bucket at `level` holds `cost` (0 if it does now).
local function rolling_retry(level, cost, cap, period)
  if level >= cost then return 0 end
  local retry = math.ceil((cost - level) * period / cap)
  -- floating point: waiting exactly retry ms must be enough (the refill check uses the same formula)
  if level + retry * cap / period < cost then retry = retry + 1 end
  return retry
end

-- Take `cost` from a rolling bucket; returns the new level and the key's expiry.
local function rolling_debit(key, level, cost, period, expires, now)
  level = level - cost
  if expires - now < period then
    -- The key must outlive now + period. Its expiry goes a quarter period beyond that, so a busy key
    -- moves it about once per quarter period instead of on every call.
    local ttl = period + math.ceil(period / 4)
    expires = now + ttl
    redis.call('HSET', key, 'v', level, 't', now, 'x', expires)
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('HSET', key, 'v', level, 't', now)
  end
  return level, expires
end

-- A bucket left below zero by a settlement is full again only after more than a period: its key must
-- live until then (plus a quarter period, as rolling_debit does), else the excess would be forgotten.
local function rolling_keep(key, level, cap, period, expires, now)
  if level >= 0 then return end
  local need = math.ceil((cap - level) * period / cap)
  if expires - now >= need then return end
  local ttl = need + math.ceil(period / 4)
  redis.call('HSET', key, 'x', now + ttl)
  redis.call('PEXPIRE', key, ttl)
end

-- Add `cost` to a calendar quota; the expiry is set once, when the window starts (its end never moves).
local function calendar_debit(key, used, cost, window_end_ms, starts, now)
  used = used + cost
  redis.call('HSET', key, 'u', used, 'e', window_end_ms)
  if starts then redis.call('PEXPIRE', key, window_end_ms - now + 1000) end
  return used
end
