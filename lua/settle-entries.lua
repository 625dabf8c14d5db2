--[[
  settle-entries: settle, or undo, some of a call's debited limits that share one cluster slot
  (src/store/cluster.ts). On a Valkey Cluster one call's limits may live in several slots, and one
  script can only touch one slot: the record is claimed first (lua/settle-claim.lua, at most once),
  then each slot's entries are settled here. The check uses it too, with every actual 0, to refund
  the slots it debited when another slot refused the call (compensation).

  KEYS[1..N]  the entries' limit keys
  KEYS[N+1]   (settlements only) this slot's done-mark for the reservation: set at the first run, so
              a retry after a lost reply changes nothing (kept SETTLED_TTL_MS)
  ARGV[1]     the reservation id (the member holding a concurrency slot)
  ARGV[2]     N
  then per entry 7 fields: kind, capacity, period, cost, window end, next end, actual units
  (as lua/settle-reservation.lua, see includes/settle.lua)

  Returns the units left per entry; an empty list when the done-mark was already set.
]]

--- @include "calendar"
--- @include "bucket"
--- @include "slots"
--- @include "settle"

local floor, tonumber = math.floor, tonumber
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
if KEYS[n + 1] then
  -- a hash counter, not SET NX: the ACL grants tollgate only the commands its scripts already use
  if redis.call('HINCRBY', KEYS[n + 1], 'd', 1) > 1 then return {} end
  redis.call('PEXPIRE', KEYS[n + 1], 120000)
end
local out = {}
for i = 1, n do
  local a = 2 + (i - 1) * 7
  local e = { 0, KEYS[i], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6] }
  out[i] = settle_entry(e, tonumber(ARGV[a + 7]), ARGV[1], now)
end
return out
