--[[
  check-limits: decide one LLM call against every limit that applies to it, atomically.

  The call has one or more candidates (the requested model, then its fallback chain). The first
  candidate whose enforced limits all fit is debited on all of its limits and chosen; nothing
  else is debited. If none fits, nothing is debited and the earliest time any candidate would
  fit is returned. Time comes from the server (TIME), never from the caller.

  KEYS[1..N]  limit state keys (hashes), deduplicated across candidates
                rolling (token bucket): v = level (units available), t = last update (ms),
                                        x = when the key expires (ms, epoch): at least one period
                                        after the last debit, when the bucket is full again
                calendar quota:         u = used units, e = window end (ms, epoch; the key expires
                                        1 s after it)
              when a queue is given (ARGV after the candidates), its stream key is KEYS[N-1] and its
              accounting hash KEYS[N]: b = bytes queued, n:<tenant> / b:<tenant> = one tenant's
              entries / bytes (released by lua/queue-release.lua when a consumer is done)
  ARGV[1]     number of candidates C
  ARGV[2]     1 = dry run (decide, debit nothing), else 0
  then for each candidate:
    E, followed by E entries of 8 fields:
      key index (1-based into KEYS)
      kind       1 = rolling token bucket, 2 = calendar quota
      capacity   units (requests, tokens or micro-dollars)
      period     rolling: window in ms; calendar: 1 hourly, 2 daily, 3 weekly (Monday), 4 monthly
      tz offset  calendar: minutes east of UTC for the quota's time zone (0 = UTC)
      cost       units this call takes from the limit
      flags      bit 1 = shadow (never blocks; reported); bit 2 = queueable (when_exhausted: queue);
                 bit 3 = a calendar quota in a time zone: two more fields follow the 8
      downgrade  remaining units below which a candidate that has a next candidate is skipped (0 = off)
      (bit 3 only) zone end, zone next: the ends (ms, epoch) of the zone's window containing the
                 caller's clock and of the one after it, computed by the caller (daylight saving time
                 moves a zone's boundaries; this script has no time-zone database)

  then, optionally, the queue tier (used only when no candidate fits and every enforced limit that
  blocks the first candidate is queueable):
    Q = 1, max_length, id, tenant, model, cost, body, max_bytes, tenant_max_entries, tenant_max_bytes,
    tenant_key
    The call is appended to the stream KEYS[N-1] (XADD, never trimmed) if the queue stays within
    max_length entries and max_bytes bytes, and the tenant within its entries and bytes; its size
    (field values + ENTRY_OVERHEAD) is stored in the entry and added to the accounting hash.

  Returns { outcome, chosen, retry_ms, now_ms, <per candidate, per entry: status, remaining, reset_ms, retry_ms>, stream_id? }
    outcome  0 = allowed, 1 = denied (retry later), 2 = denied (no candidate can ever fit),
             3 = queued (stream id appended last), 4 = denied, queue full (appended last: 1 entries,
             2 bytes, 3 the tenant's entries, 4 the tenant's bytes)
    chosen   1-based candidate index that was debited, 0 when denied
    status   0 = fits, 1 = does not fit now, 2 = can never fit (cost > capacity), 3 = fits but below downgrade
    remaining  units left after this call (if debited) or now
    reset_ms   rolling: ms until the bucket is full again; calendar: ms until the window ends
    retry_ms   ms until this entry would fit this cost (0 if it fits now, -1 never)
]]

local floor, ceil, tonumber = math.floor, math.ceil, tonumber
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local ncand = tonumber(ARGV[1])
local dry = ARGV[2] == '1'

-- (math.floor spelled out here: test/trust-model.test.ts runs this function on its own)
local function window_end(now_ms, unit, off_min)
  local off = off_min * 60000
  local lm = now_ms + off
  if unit == 1 then return (math.floor(lm / 3600000) + 1) * 3600000 - off end
  local days = math.floor(lm / 86400000)
  if unit == 2 then return (days + 1) * 86400000 - off end
  if unit == 3 then
    local dow = (days + 3) % 7 -- 1970-01-01 was a Thursday; Monday = 0
    return (days - dow + 7) * 86400000 - off
  end
  -- monthly: civil date from day number, then day number of the 1st of next month (H. Hinnant)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  m = m + 1
  if m > 12 then m = 1; y = y + 1 end
  if m <= 2 then y = y - 1 end
  local era2 = math.floor(y / 400)
  local yoe2 = y - era2 * 400
  local mp2 = m > 2 and m - 3 or m + 9
  local doe2 = yoe2 * 365 + math.floor(yoe2 / 4) - math.floor(yoe2 / 100) + math.floor((153 * mp2 + 2) / 5)
  return (era2 * 146097 + doe2 - 719468) * 86400000 - off
end

-- The end of the calendar window containing now_ms: the caller's zoned ends when given, else the
-- fixed-offset arithmetic (UTC, or a store clock far from the caller's). Mirrors calendarEnd in
-- src/store/calendar.ts.
local function calendar_end(now_ms, unit, off_min, z_end, z_next)
  if z_end then
    if now_ms < z_end then return z_end end
    if now_ms < z_next then return z_next end
  end
  return window_end(now_ms, unit, off_min)
end

-- Few tables, filled in ascending index order (Lua keeps them as plain arrays; a table per entry
-- or per key would cost more than the checks themselves):
-- A[ki], W[ki]  per key index (read once, shared by every candidate that names it): bucket level
--               (rolling) or used units (calendar); when the key expires (rolling: field x, 0 if
--               unknown) or the window end (calendar)
-- F[ki]         true when a calendar key starts a new window in this call (its expiry is then set
--               on debit); created only when that happens
-- E             per entry (numbered across candidates from 0), stride 8:
--               key index, kind, capacity, period, cost, flags, retry_ms, status
-- C             per candidate c, stride 6: first entry number, entry count, hard (every enforced
--               limit fits), soft (and none is below its downgrade threshold), never (one can never
--               fit), retry_ms
local A, W, E, C, F = {}, {}, {}, {}, nil
local n = 0
local p = 3
for c = 1, ncand do
  local ne = tonumber(ARGV[p]); p = p + 1
  local hard, soft, never, retry_c = true, true, false, 0
  for _ = 1, ne do
    local ki, kind, cap, period = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
    local cost, flags, down = tonumber(ARGV[p + 5]), tonumber(ARGV[p + 6]), tonumber(ARGV[p + 7])
    local a = A[ki]
    if a == nil then
      if kind == 1 then
        local h = redis.call('HMGET', KEYS[ki], 'v', 't', 'x')
        local v, ts = tonumber(h[1]), tonumber(h[2])
        W[ki] = tonumber(h[3]) or 0
        a = cap
        if v and ts then
          local elapsed = now - ts
          if elapsed < 0 then elapsed = 0 end -- server clock stepped back: no refill, no harm
          if elapsed < period then
            a = v + elapsed * cap / period
            if a > cap then a = cap end
          end
        end
      else
        local h = redis.call('HMGET', KEYS[ki], 'u', 'e')
        local u, e = tonumber(h[1]), tonumber(h[2])
        if not u or not e or now >= e then
          u = 0
          local z_end, z_next
          if flags % 8 >= 4 then z_end, z_next = tonumber(ARGV[p + 8]), tonumber(ARGV[p + 9]) end
          e = calendar_end(now, period, tonumber(ARGV[p + 4]), z_end, z_next)
          F = F or {}
          F[ki] = true
        end
        a = u
        W[ki] = e
      end
      A[ki] = a
    end
    p = p + 8
    if flags % 8 >= 4 then p = p + 2 end
    local fits, avail, retry
    if kind == 1 then
      avail = a
      fits = a >= cost
      if fits then retry = 0 else
        retry = ceil((cost - a) * period / cap)
        -- floating point: waiting exactly retry ms must be enough (the refill check uses the same formula)
        if a + retry * cap / period < cost then retry = retry + 1 end
      end
    else
      avail = cap - a
      fits = a + cost <= cap
      if fits then retry = 0 else retry = W[ki] - now end
    end
    local status = 0
    if cost > cap then status = 2 elseif not fits then status = 1
    elseif down > 0 and (avail - cost) < down then status = 3 end
    if flags % 2 == 0 then -- enforced (not shadow)
      if not fits then
        hard = false
        if status == 2 then never = true elseif retry > retry_c then retry_c = retry end
      elseif status == 3 then
        soft = false
      end
    end
    local b = n * 8
    E[b + 1] = ki
    E[b + 2] = kind
    E[b + 3] = cap
    E[b + 4] = period
    E[b + 5] = cost
    E[b + 6] = flags
    E[b + 7] = retry
    E[b + 8] = status
    n = n + 1
  end
  local cb = 6 * c
  C[cb - 5] = n - ne
  C[cb - 4] = ne
  C[cb - 3] = hard
  C[cb - 2] = hard and soft
  C[cb - 1] = never
  C[cb] = retry_c
end

local chosen = 0
for c = 1, ncand do
  if C[6 * c - 2] or (c == ncand and C[6 * c - 3]) then chosen = c; break end
end
if chosen == 0 then
  -- every candidate is either over a limit or below a downgrade threshold: prefer serving over denying
  for c = 1, ncand do
    if C[6 * c - 3] then chosen = c; break end
  end
end

-- status 0 (fits) and 3 (fits, below the downgrade threshold) are the entries that fit
if chosen > 0 and not dry then
  local first = C[6 * chosen - 5]
  for j = first, first + C[6 * chosen - 4] - 1 do
    local b = j * 8
    local status = E[b + 8]
    if status == 0 or status == 3 then
      local ki = E[b + 1]
      if E[b + 2] == 1 then
        local level = A[ki] - E[b + 5]
        A[ki] = level
        local period = E[b + 4]
        if W[ki] - now < period then
          -- The key must outlive now + period (when the bucket is full again, so losing it loses
          -- nothing). Its expiry goes a quarter period beyond that, so a busy key moves it about once
          -- per quarter period instead of on every call.
          local ttl = period + ceil(period / 4)
          W[ki] = now + ttl
          redis.call('HSET', KEYS[ki], 'v', level, 't', now, 'x', W[ki])
          redis.call('PEXPIRE', KEYS[ki], ttl)
        else
          redis.call('HSET', KEYS[ki], 'v', level, 't', now)
        end
      else
        local used = A[ki] + E[b + 5]
        A[ki] = used
        redis.call('HSET', KEYS[ki], 'u', used, 'e', W[ki])
        if F and F[ki] then
          -- the window's end does not move within the window, so neither does the key's expiry
          redis.call('PEXPIRE', KEYS[ki], W[ki] - now + 1000)
          F[ki] = nil
        end
      end
    end
  end
end

local outcome, retry = 0, 0
if chosen == 0 then
  outcome = 2
  retry = -1
  for c = 1, ncand do
    if not C[6 * c - 1] and (retry < 0 or C[6 * c] < retry) then retry = C[6 * c]; outcome = 1 end
  end
end

-- Bytes an entry is charged beyond its field values: the field names, enqueued_at, size, the stream
-- id and the stream's own bookkeeping (lua/queue-release.lua releases exactly what was charged).
local ENTRY_OVERHEAD = 128

local stream_id, queue_full
if outcome == 1 and ARGV[p] == '1' then
  -- queueable when every enforced limit that blocks the first candidate is (flags bit 2)
  local queueable = true
  for j = 0, C[2] - 1 do
    local b = j * 8
    local flags, status = E[b + 6], E[b + 8]
    -- a limit the call can never fit (status 2) is never queueable: no consumer could ever run it
    if flags % 2 == 0 and status ~= 0 and status ~= 3 and (floor(flags / 2) % 2 == 0 or status == 2) then
      queueable = false
    end
  end
  if queueable then
    local qkey, akey, tkey = KEYS[#KEYS - 1], KEYS[#KEYS], ARGV[p + 10]
    local len = redis.call('XLEN', qkey)
    local used, tn, tb = 0, 0, 0
    if len == 0 then
      -- an empty queue holds nothing: counters left by entries removed without the release script
      -- (XDEL, XTRIM or DEL by hand) start again from zero
      if not dry then redis.call('PEXPIRE', akey, 0) end
    else
      local h = redis.call('HMGET', akey, 'b', 'n:' .. tkey, 'b:' .. tkey)
      used, tn, tb = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
    end
    local size = #ARGV[p + 2] + #ARGV[p + 3] + #ARGV[p + 4] + #ARGV[p + 5] + #ARGV[p + 6] + #tkey + ENTRY_OVERHEAD
    if len >= tonumber(ARGV[p + 1]) then queue_full = 1
    elseif used + size > tonumber(ARGV[p + 7]) then queue_full = 2
    elseif tn + 1 > tonumber(ARGV[p + 8]) then queue_full = 3
    elseif tb + size > tonumber(ARGV[p + 9]) then queue_full = 4 end
    if queue_full then
      outcome = 4
    else
      if not dry then
        stream_id = redis.call('XADD', qkey, '*', 'id', ARGV[p + 2], 'tenant', ARGV[p + 3], 'model', ARGV[p + 4],
          'cost', ARGV[p + 5], 'enqueued_at', now, 'body', ARGV[p + 6], 'size', size, 'tkey', tkey)
        redis.call('HINCRBY', akey, 'b', size)
        redis.call('HINCRBY', akey, 'n:' .. tkey, 1)
        redis.call('HINCRBY', akey, 'b:' .. tkey, size)
      else
        stream_id = 'dry-run'
      end
      outcome = 3
    end
  end
end

local out = { outcome, chosen, retry, now }
local o = 4
for c = 1, ncand do
  local first = C[6 * c - 5]
  for j = first, first + C[6 * c - 4] - 1 do
    local b = j * 8
    local ki, cap, cost, status = E[b + 1], E[b + 3], E[b + 5], E[b + 8]
    -- a dry run reports what the chosen candidate's limits would have left
    local pending = dry and c == chosen and (status == 0 or status == 3)
    local remaining, reset
    if E[b + 2] == 1 then
      remaining = A[ki]
      if pending then remaining = remaining - cost end
      reset = ceil((cap - remaining) * E[b + 4] / cap)
    else
      remaining = cap - A[ki]
      if pending then remaining = remaining - cost end
      reset = W[ki] - now
    end
    local r = E[b + 7]
    if status == 2 then r = -1 end
    out[o + 1] = status
    out[o + 2] = floor(remaining)
    out[o + 3] = reset
    out[o + 4] = r
    o = o + 4
  end
end
if stream_id then out[o + 1] = stream_id elseif queue_full then out[o + 1] = queue_full end
return out
