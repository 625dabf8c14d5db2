--[[
  Concurrency limits: a sorted set per scope whose members are the reservation ids of calls in
  flight, each scored with the end of its lease (ms, epoch). A slot is taken by the check script and
  released by the settle script (ZREM); a slot never released frees itself when its lease ends.
]]

-- Slots in use now (expired leases dropped) and the earliest lease end (0 when none is held).
local function slots_read(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  local first = 0
  if held > 0 then first = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) end
  return held, first
end

-- ms a call must wait for a slot: until the earliest lease ends, at most `max_ms` (a call in flight
-- usually ends, and releases its slot, long before its lease does).
local function slots_retry(first, now, max_ms)
  local r = first - now
  if r < 1 then r = 1 end
  if r > max_ms then r = max_ms end
  return r
end

-- Take a slot for `member` until now + lease; the key lives as long as its latest lease.
local function slots_take(key, held, member, lease, now)
  redis.call('ZADD', key, now + lease, member)
  redis.call('PEXPIRE', key, lease)
  return held + 1
end
