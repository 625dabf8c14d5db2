-- The answer cache's purge (tollgate cache purge): drop up to 1000 answers of one scope, with their
-- byte accounting (src/store/answer-valkey.ts calls it until it returns 0 answers).
--
-- KEYS[1] the scope's index   KEYS[2] the index of all answers   KEYS[3] the byte accounting hash
-- ARGV: 1 answer key prefix
-- Returns { answers dropped, bytes freed }.
local members = redis.call('ZRANGE', KEYS[1], 0, 999)
local bytes = 0
for _, m in ipairs(members) do
  local scope, hash, sz, kind = string.match(m, '^(%S+) (%S+) (%d+) (%S+)$')
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  if scope then
    redis.call('HDEL', ARGV[1] .. scope .. ':' .. hash, 'v')
    redis.call('HINCRBY', KEYS[3], 's:' .. scope, -tonumber(sz))
    redis.call('HINCRBY', KEYS[3], 'k:' .. kind, -tonumber(sz))
    redis.call('HINCRBY', KEYS[3], 'total', -tonumber(sz))
    bytes = bytes + tonumber(sz)
  end
end
return { #members, bytes }
