--[[
  queue-release: a consumer is done with a queued entry (handled, or given up on). Atomically:
  acknowledge it, delete it from the stream and release the bytes and the tenant's share that
  lua/check-limits.lua charged for it, or, for a dead letter, copy it to the dead-letter stream first.
  Idempotent: only the call that actually deletes the entry releases anything, so two consumers
  finishing the same (reclaimed) entry, or a retry after a lost reply, never release twice.

  KEYS[1]  the queue's stream            <prefix>:q:<queue>
  KEYS[2]  its accounting hash            <prefix>:q:<queue>:acct
  KEYS[3]  its dead-letter stream         <prefix>:q:<queue>:dead (used by mode "dead" only)
  ARGV[1]  consumer group
  ARGV[2]  stream entry id
  ARGV[3]  "ack" | "dead"
  ARGV[4]  dead-letter stream length bound (oldest dead letters are trimmed past it)

  Returns 1 when this call removed the entry, 0 when it was already gone.
]]
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if #e == 0 then return 0 end
local f = e[1][2]
local size, tkey = 0, nil
for i = 1, #f, 2 do
  if f[i] == 'size' then size = tonumber(f[i + 1]) or 0 elseif f[i] == 'tkey' then tkey = f[i + 1] end
end
if ARGV[3] == 'dead' then
  local args = { 'XADD', KEYS[3], 'MAXLEN', ARGV[4], '*' }
  for i = 1, #f do args[#args + 1] = f[i] end
  redis.call(unpack(args))
end
redis.call('XDEL', KEYS[1], ARGV[2])
local function release(field, n)
  if redis.call('HINCRBY', KEYS[2], field, -n) <= 0 then redis.call('HDEL', KEYS[2], field) end
end
-- entries queued before byte accounting carry no size: nothing was charged for them
if size > 0 and tkey then
  release('b', size)
  release('n:' .. tkey, 1)
  release('b:' .. tkey, size)
end
return 1
