--[[
  settle-reservation: settle one call's reservation to what it used, atomically and at most once.

  The check script recorded the reservation (lua/check-limits.lua, "the reservation part"): which
  limits the chosen candidate debited and by how much. The caller read that record, priced the call's
  actual usage per limit (src/policy/settle.ts) and passes it here; the record is read again inside
  the script, so a record settled meanwhile is never settled twice.

  KEYS[1]       the reservation record (hash: r, id, e; s = 1 once settled)
  KEYS[2..N+1]  the record's entry keys, in the record's order (checked against it)
  KEYS[N+2]     (optional) the usage export stream
  ARGV[1]       N
  ARGV[2..N+1]  actual units per entry
  ARGV[N+2]     1 = write the export entry: then ARGV[N+3] = max_length, and field/value pairs follow

  Per entry, delta = reserved − actual:
    rolling    level + delta, capped at capacity (a refund never makes a bucket fuller than full); a
               negative delta (usage beyond the reservation) debits and may leave the level below zero:
               later calls wait for the refill
    calendar   used − delta in the window the reservation was debited to; a window that has ended
               keeps what it had (its spend is gone anyway); an excess goes to the window after it
               (the record keeps its end), unless that one is over too
    slots      the reservation's slot is released (ZREM), whatever delta says
  A rolling bucket left below zero keeps its key until it is full again (rolling_keep); the remaining
  of a calendar window that has ended is its capacity; slots remaining exclude leases that have ended.
  The record is then marked settled and shrunk to that mark for at most SETTLED_TTL_MS, so a second
  settle answers 2 and changes nothing (later it finds no record: 0, and changes nothing either).

  Returns { 1, remaining per entry... } settled; { 2 } already settled; { 0 } no record (expired,
  never made); an error when KEYS do not match the record.
]]

--- @include "calendar"
--- @include "bucket"
--- @include "slots"
--- @include "settle"

local floor, tonumber = math.floor, tonumber
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local SETTLED_TTL_MS = 120000 -- SETTLED_TTL_MS in src/policy/plan-types.ts

local rec = redis.call('HMGET', KEYS[1], 'e', 's', 'id')
if rec[2] then return { 2 } end
if not rec[1] then return { 0 } end
local entries = cjson.decode(rec[1])
local n = tonumber(ARGV[1])
if #entries ~= n then return redis.error_reply('settle: the record has ' .. #entries .. ' entries, not ' .. n) end

local out = { 1 }
for i = 1, n do
  local e = entries[i]
  if KEYS[i + 1] ~= e[2] then return redis.error_reply('settle: key ' .. i .. ' is not the record\'s') end
  out[#out + 1] = settle_entry(e, tonumber(ARGV[i + 1]), rec[3], now)
end
-- kept settled (a repeat answers 2) but small, and only briefly: a repeat after that finds no record
redis.call('HSET', KEYS[1], 's', 1)
redis.call('HDEL', KEYS[1], 'e', 'r')
if redis.call('PTTL', KEYS[1]) > SETTLED_TTL_MS then redis.call('PEXPIRE', KEYS[1], SETTLED_TTL_MS) end

if ARGV[n + 2] == '1' then
  local args = { 'XADD', KEYS[n + 2], 'MAXLEN', '~', ARGV[n + 3], '*' }
  for j = n + 4, #ARGV do args[#args + 1] = ARGV[j] end
  redis.call(unpack(args))
end
return out
