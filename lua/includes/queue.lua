--[[
  The queue tier: append a call that fits no candidate to its queue's stream, within the queue's
  bounds (entries, bytes) and the tenant's share of them, charging its size to the accounting hash
  that lua/queue-release.lua releases when a consumer is done. Never trims accepted entries.

  qkey  the stream; akey  the accounting hash (b = bytes queued, n:<tenant> / b:<tenant> = one
  tenant's entries / bytes); a = index into ARGV of the queue fields after Q = 1:
    max_length, id, tenant, model, cost, body, max_bytes, tenant_max_entries, tenant_max_bytes,
    tenant_key
]]

-- Bytes an entry is charged beyond its field values: the field names, enqueued_at, size, the stream
-- id and the stream's own bookkeeping (lua/queue-release.lua releases exactly what was charged).
local ENTRY_OVERHEAD = 128

-- Returns the new entry's id ('dry-run' in a dry run), or nil and which bound was full
-- (1 entries, 2 bytes, 3 the tenant's entries, 4 the tenant's bytes).
local function enqueue(qkey, akey, a, now, dry)
  local tkey = ARGV[a + 9]
  local len = redis.call('XLEN', qkey)
  local used, tenant_n, tenant_b = 0, 0, 0
  if len == 0 then
    -- an empty queue holds nothing: counters left by entries removed without the release script
    -- (XDEL, XTRIM or DEL by hand) start again from zero
    if not dry then redis.call('PEXPIRE', akey, 0) end
  else
    local h = redis.call('HMGET', akey, 'b', 'n:' .. tkey, 'b:' .. tkey)
    used, tenant_n, tenant_b = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  end
  local size = #ARGV[a + 1] + #ARGV[a + 2] + #ARGV[a + 3] + #ARGV[a + 4] + #ARGV[a + 5] + #tkey + ENTRY_OVERHEAD
  if len >= tonumber(ARGV[a]) then return nil, 1 end
  if used + size > tonumber(ARGV[a + 6]) then return nil, 2 end
  if tenant_n + 1 > tonumber(ARGV[a + 7]) then return nil, 3 end
  if tenant_b + size > tonumber(ARGV[a + 8]) then return nil, 4 end
  if dry then return 'dry-run' end
  local id = redis.call('XADD', qkey, '*', 'id', ARGV[a + 1], 'tenant', ARGV[a + 2], 'model', ARGV[a + 3],
    'cost', ARGV[a + 4], 'enqueued_at', now, 'body', ARGV[a + 5], 'size', size, 'tkey', tkey)
  redis.call('HINCRBY', akey, 'b', size)
  redis.call('HINCRBY', akey, 'n:' .. tkey, 1)
  redis.call('HINCRBY', akey, 'b:' .. tkey, size)
  return id
end
