--[[
  queue-enqueue: on a Valkey Cluster, the queue tier's append for a call no candidate fits
  (src/store/cluster.ts): the queue's keys share their own slot ({q.<queue>}), apart from the limits,
  so the check decides first and this script appends after. Same bounds and accounting as the check
  script's queue part (includes/queue.lua).

  KEYS[1]  the queue's stream   KEYS[2]  its accounting hash
  ARGV     1 (or 2: a dry run, nothing appended), then the queue fields as lua/check-limits.lua
           takes them (max_length … tenant_key)
  Returns { 3, stream id } queued ('dry-run' in a dry run), or { 4, which bound was full }.
]]

--- @include "queue"

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, full = enqueue(KEYS[1], KEYS[2], 2, now, ARGV[1] == '2')
if id then return { 3, id } end
return { 4, full }
