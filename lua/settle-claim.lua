--[[
  settle-claim: on a Valkey Cluster, the first step of a settlement whose limits live in other slots
  than its record (src/store/cluster-settle.ts): mark the record settled, at most once, and hand back
  what it debited; lua/settle-entries.lua then settles each slot's entries. A standalone or single-slot
  settlement does both in one step (lua/settle-reservation.lua).

  KEYS[1]  the reservation record
  ARGV[1]  the number of entries the caller priced (a record with another count is left unclaimed)
  Returns { 1, entries (the record's JSON), id } claimed; { 2 } already settled; { 0 } no record.
]]

local SETTLED_TTL_MS = 120000 -- SETTLED_TTL_MS in src/policy/plan-types.ts
local rec = redis.call('HMGET', KEYS[1], 'e', 's', 'id')
if rec[2] then return { 2 } end
if not rec[1] then return { 0 } end
local entries = cjson.decode(rec[1])
local n = 0
if type(entries) == 'table' then n = #entries end
if n ~= tonumber(ARGV[1]) then
  return redis.error_reply('settle: the record has ' .. n .. ' entries, not ' .. ARGV[1])
end
redis.call('HSET', KEYS[1], 's', 1)
redis.call('HDEL', KEYS[1], 'e', 'r')
if redis.call('PTTL', KEYS[1]) > SETTLED_TTL_MS then redis.call('PEXPIRE', KEYS[1], SETTLED_TTL_MS) end
return { 1, rec[1], rec[3] }
