--[[
  Settling one debited limit entry (lua/settle-reservation.lua, and lua/settle-entries.lua on a
  cluster, where a call's limits may live in several slots). `e` is the record's entry:
  { index, key, kind, capacity, period, cost, window end, next end }; `actual` the units used;
  `member` the reservation id holding a concurrency slot. Returns the units left (floor).
  Needs includes calendar, bucket and slots.
]]

local function settle_entry(e, actual, member, now)
  local ROLLING, CALENDAR, SLOTS = 1, 2, 3
  local floor, tonumber = math.floor, tonumber
  local key, kind, cap, period = e[2], e[3], tonumber(e[4]), tonumber(e[5])
  local cost, window_end, next_end = tonumber(e[6]), tonumber(e[7]), tonumber(e[8] or 0)
  local delta = cost - actual
  local remaining = 0
  if kind == ROLLING then
    local level, expires = rolling_read(key, cap, period, now)
    local after = level + delta
    if after > cap then after = cap end
    if after ~= level then
      level, expires = rolling_debit(key, level, level - after, period, expires, now)
      rolling_keep(key, level, cap, period, expires, now)
    end
    remaining = level
  elseif kind == CALENDAR then
    local h = redis.call('HMGET', key, 'u', 'e')
    local used, e_end = tonumber(h[1]), tonumber(h[2])
    if used and e_end == window_end and now < e_end then
      used = used - delta
      if used < 0 then used = 0 end
      redis.call('HSET', key, 'u', used)
    elseif delta < 0 and now < next_end then
      -- the reserved window is over: the excess is charged to the next one (started here if need be)
      if used and e_end == next_end then
        used = used - delta
        redis.call('HSET', key, 'u', used)
      else
        used, e_end = -delta, next_end
        redis.call('HSET', key, 'u', used, 'e', next_end)
        redis.call('PEXPIRE', key, next_end - now + 1000)
      end
    end
    -- a window that has ended (its key lingers a second) holds nothing any more
    if not (used and e_end and now < e_end) then used = 0 end
    remaining = cap - used
  elseif kind == SLOTS then
    redis.call('ZREM', key, member)
    remaining = cap - slots_read(key, now) -- leases that have ended do not count
  end
  return floor(remaining)
end
