-- The answer cache's fill (src/store/answer-valkey.ts): store one answer with its TTL, bounded in
-- bytes per scope and in total, atomically. Expired answers are dropped first (at most 64 per call),
-- then the scope's oldest while the scope is over its share, then the oldest of all while the total is
-- over max_bytes (at most 256 evictions per call); an answer that still does not fit is refused.
--
-- KEYS[1] the answer's key   KEYS[2] the index of all answers   KEYS[3] the scope's index
-- KEYS[4] the byte accounting hash
-- ARGV: 1 member ("<scope> <hash> <bytes> <kind>")  2 bytes  3 ttl ms  4 now ms  5 scope max bytes
--       6 total max bytes  7 the answer  8 answer key prefix  9 scope index prefix  10 scope id
--       11 scope kind
-- Returns 1 stored, 0 already there, -1 does not fit.
-- Only commands the check and settle scripts use (an answer is a hash of one field, v): the ACL
-- needs nothing more for the cache (no SET, GET or DEL).
local size = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
local scopeMax = tonumber(ARGV[5])
local totalMax = tonumber(ARGV[6])

local function drop(member)
  local scope, hash, sz, kind = string.match(member, '^(%S+) (%S+) (%d+) (%S+)$')
  redis.call('ZREM', KEYS[2], member)
  if not scope then return end
  redis.call('ZREM', ARGV[9] .. scope, member)
  redis.call('HDEL', ARGV[8] .. scope .. ':' .. hash, 'v')
  redis.call('HINCRBY', KEYS[4], 's:' .. scope, -tonumber(sz))
  redis.call('HINCRBY', KEYS[4], 'k:' .. kind, -tonumber(sz))
  redis.call('HINCRBY', KEYS[4], 'total', -tonumber(sz))
end

local function held(field)
  return tonumber(redis.call('HMGET', KEYS[4], field)[1] or '0')
end

for _, m in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, 64)) do drop(m) end
if redis.call('PTTL', KEYS[1]) ~= -2 then return 0 end
if size > scopeMax or size > totalMax then return -1 end

local evicted = 0
while held('s:' .. ARGV[10]) + size > scopeMax and evicted < 256 do
  local m = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
  if not m then break end
  drop(m)
  evicted = evicted + 1
end
while held('total') + size > totalMax and evicted < 256 do
  local m = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not m then break end
  drop(m)
  evicted = evicted + 1
end
if held('s:' .. ARGV[10]) + size > scopeMax or held('total') + size > totalMax then return -1 end

local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'v', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[3], now + ttl, ARGV[1])
redis.call('HINCRBY', KEYS[4], 's:' .. ARGV[10], size)
redis.call('HINCRBY', KEYS[4], 'k:' .. ARGV[11], size)
redis.call('HINCRBY', KEYS[4], 'total', size)
return 1
