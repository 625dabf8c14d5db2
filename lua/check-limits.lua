--[[
  check-limits: decide one LLM call against every limit that applies to it, atomically.

  The call has one or more candidates (the requested model, then its fallback chain). The first
  candidate whose enforced limits all fit is debited on all of its limits and chosen; nothing
  else is debited. If none fits, nothing is debited and the earliest time any candidate would
  fit is returned. Time comes from the server (TIME), never from the caller.

  Parts (assembled into one script by scripts/build-lua.mjs): includes/calendar.lua (window ends),
  includes/bucket.lua (reading and debiting a limit's key), includes/queue.lua (the queue tier).

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
      kind       1 = rolling token bucket, 2 = calendar quota, 3 = concurrency (slots)
      capacity   units (requests, tokens or micro-dollars; slots)
      period     rolling: window in ms; calendar: 1 hourly, 2 daily, 3 weekly (Monday), 4 monthly;
                 concurrency: the lease in ms
      tz offset  calendar: minutes east of UTC for the quota's time zone (0 = UTC)
      cost       units this call takes from the limit
      flags      bit 1 = shadow (never blocks; reported); bit 2 = queueable (when_exhausted: queue);
                 bit 3 = a calendar quota in a time zone: two more fields follow the 8
      downgrade  remaining units below which a candidate that has a next candidate is skipped (0 = off)
      (bit 3 only) zone end, zone next: the ends (ms, epoch) of the zone's window containing the
                 caller's clock and of the one after it, computed by the caller (daylight saving time
                 moves a zone's boundaries; this script has no time-zone database)

  then the reservation part: 0 (none), or 2, reservation id: no record, the id holds concurrency
  slots and the debited entries' JSON list (as below) is appended to the reply (a Valkey Cluster's
  slot-by-slot check, src/store/cluster.ts, writes the record itself), or
    1, key index of the reservation record (a hash), reservation id, ttl_ms, then C records (one per
    candidate, opaque text). When a candidate is chosen (and not a dry run) the record key gets
    r = that candidate's record, id = the id, e = the debited entries as a JSON list of lists
    ( index (0-based in the candidate), key, kind, capacity, period, cost, window end, next end )
    (numbers after the key as decimal text; window end and the end of the window after it: calendar
    only, else 0), and expires after ttl_ms. Concurrency slots are held by the
    reservation id (lua/settle-reservation.lua releases them).

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

--- @include "calendar"
--- @include "bucket"
--- @include "queue"
--- @include "slots"

local floor, tonumber = math.floor, tonumber
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local ncand = tonumber(ARGV[1])
local dry = ARGV[2] == '1'

-- A few flat tables, filled in ascending index order (Lua keeps them as plain arrays; a table per
-- entry or per key would cost more than the checks themselves):
--   state[ki], horizon[ki]  per key index, read once and shared by every candidate that names it:
--                           bucket level (rolling) or used units (calendar); when the key expires
--                           (rolling, 0 if unknown) or the window end (calendar)
--   fresh[ki]               true when a calendar key starts a new window in this call (its expiry is
--                           then set on debit); created only when that happens
--   entries                 per entry (numbered across candidates from 0), stride ENTRY:
--                           key index, kind, capacity, period, cost, flags, retry_ms, status
--   cands                   per candidate c, stride CAND: first entry number, entry count, hard (every
--                           enforced limit fits), soft (and none is below its downgrade threshold),
--                           never (one can never fit), retry_ms
local ENTRY, E_KEY, E_KIND, E_CAP, E_PERIOD, E_COST, E_FLAGS, E_RETRY, E_STATUS = 8, 1, 2, 3, 4, 5, 6, 7, 8
local CAND, C_FIRST, C_COUNT, C_HARD, C_SOFT, C_NEVER, C_RETRY = 6, -5, -4, -3, -2, -1, 0
local ROLLING, SLOTS = 1, 3
local SLOT_RETRY_MAX = 2000 -- CONCURRENT_RETRY_MAX_MS in src/policy/plan-types.ts
local FITS, EXCEEDED, NEVER, BELOW_DOWNGRADE = 0, 1, 2, 3
local state, horizon, entries, cands, fresh, next_end = {}, {}, {}, {}, nil, {}

-- Read every entry's limit (each key once) and judge it against this call's cost.
local n = 0
local p = 3
for c = 1, ncand do
  local ne = tonumber(ARGV[p]); p = p + 1
  local hard, soft, never, retry_c = true, true, false, 0
  for _ = 1, ne do
    local ki, kind, cap, period = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
    local cost, flags, down = tonumber(ARGV[p + 5]), tonumber(ARGV[p + 6]), tonumber(ARGV[p + 7])
    local zoned = flags % 8 >= 4
    local a = state[ki]
    if a == nil then
      if kind == ROLLING then
        a, horizon[ki] = rolling_read(KEYS[ki], cap, period, now)
      elseif kind == SLOTS then
        a, horizon[ki] = slots_read(KEYS[ki], now)
      else
        local z_end, z_next
        if zoned then z_end, z_next = tonumber(ARGV[p + 8]), tonumber(ARGV[p + 9]) end
        local starts
        local off = tonumber(ARGV[p + 4])
        a, horizon[ki], starts = calendar_read(KEYS[ki], period, off, z_end, z_next, now)
        if starts then fresh = fresh or {}; fresh[ki] = true end
        -- the end of the window after this one (where a settlement's excess goes once this one is over)
        if z_end and horizon[ki] == z_end then next_end[ki] = z_next else next_end[ki] = window_end(horizon[ki], period, off) end
      end
      state[ki] = a
    end
    p = p + 8
    if zoned then p = p + 2 end
    local fits, avail, retry
    if kind == ROLLING then
      avail = a
      retry = rolling_retry(a, cost, cap, period)
      fits = retry == 0
    elseif kind == SLOTS then
      avail = cap - a
      fits = a + cost <= cap
      if fits then retry = 0 else retry = slots_retry(horizon[ki], now, SLOT_RETRY_MAX) end
    else
      avail = cap - a
      fits = a + cost <= cap
      if fits then retry = 0 else retry = horizon[ki] - now end
    end
    local status = FITS
    if cost > cap then status = NEVER elseif not fits then status = EXCEEDED
    elseif down > 0 and (avail - cost) < down then status = BELOW_DOWNGRADE end
    if flags % 2 == 0 then -- enforced (not shadow)
      if not fits then
        hard = false
        if status == NEVER then never = true elseif retry > retry_c then retry_c = retry end
      elseif status == BELOW_DOWNGRADE then
        soft = false
      end
    end
    local b = n * ENTRY
    entries[b + E_KEY] = ki
    entries[b + E_KIND] = kind
    entries[b + E_CAP] = cap
    entries[b + E_PERIOD] = period
    entries[b + E_COST] = cost
    entries[b + E_FLAGS] = flags
    entries[b + E_RETRY] = retry
    entries[b + E_STATUS] = status
    n = n + 1
  end
  local cb = CAND * c
  cands[cb + C_FIRST] = n - ne
  cands[cb + C_COUNT] = ne
  cands[cb + C_HARD] = hard
  cands[cb + C_SOFT] = hard and soft
  cands[cb + C_NEVER] = never
  cands[cb + C_RETRY] = retry_c
end

-- The reservation part (see the header): where ARGV's record for candidate c is.
local resv_key, resv_id, resv_ttl, resv_rec, resv_list = nil, nil, 0, 0, false
if ARGV[p] == '1' then
  resv_key, resv_id, resv_ttl = KEYS[tonumber(ARGV[p + 1])], ARGV[p + 2], tonumber(ARGV[p + 3])
  resv_rec = p + 3
  p = p + 4 + ncand
elseif ARGV[p] == '2' then
  resv_id, resv_list = ARGV[p + 1], true
  p = p + 2
else
  p = p + 1
end

-- The first candidate that fits without dipping below a downgrade threshold (the last one may), else
-- the first that fits at all: prefer serving over denying.
local chosen = 0
for c = 1, ncand do
  if cands[CAND * c + C_SOFT] or (c == ncand and cands[CAND * c + C_HARD]) then chosen = c; break end
end
if chosen == 0 then
  for c = 1, ncand do
    if cands[CAND * c + C_HARD] then chosen = c; break end
  end
end

-- Debit the chosen candidate's limits that fit (enforced or shadow): status FITS or BELOW_DOWNGRADE.
local debited = {}
if chosen > 0 and not dry then
  local first = cands[CAND * chosen + C_FIRST]
  for j = first, first + cands[CAND * chosen + C_COUNT] - 1 do
    local b = j * ENTRY
    local status = entries[b + E_STATUS]
    if status == FITS or status == BELOW_DOWNGRADE then
      local ki, kind = entries[b + E_KEY], entries[b + E_KIND]
      local w_end, w_next = 0, 0
      if kind == ROLLING then
        state[ki], horizon[ki] = rolling_debit(KEYS[ki], state[ki], entries[b + E_COST], entries[b + E_PERIOD], horizon[ki], now)
      elseif kind == SLOTS then
        if entries[b + E_COST] > 0 then -- a zero-cost probe holds no slot
          state[ki] = slots_take(KEYS[ki], state[ki], resv_id or ('x' .. now .. ':' .. j), entries[b + E_PERIOD], now)
          if horizon[ki] == 0 then horizon[ki] = now + entries[b + E_PERIOD] end
        end
      else
        w_end, w_next = horizon[ki], next_end[ki] or 0
        local starts = fresh ~= nil and fresh[ki] == true
        state[ki] = calendar_debit(KEYS[ki], state[ki], entries[b + E_COST], horizon[ki], starts, now)
        if starts then fresh[ki] = nil end
      end
      if resv_key or resv_list then
        local f = '%.17g' -- exact integers as text (cjson would round numbers to 14 digits)
        debited[#debited + 1] = { j - first, KEYS[ki], kind, f:format(entries[b + E_CAP]), f:format(entries[b + E_PERIOD]),
          f:format(entries[b + E_COST]), f:format(w_end), f:format(w_next) }
      end
    end
  end
  if resv_key then
    redis.call('HSET', resv_key, 'r', ARGV[resv_rec + chosen], 'id', resv_id, 'e', cjson.encode(debited))
    redis.call('PEXPIRE', resv_key, resv_ttl)
  end
end

-- Denied: the earliest time any candidate that can ever fit would fit.
local outcome, retry = 0, 0
if chosen == 0 then
  outcome = 2
  retry = -1
  for c = 1, ncand do
    local cb = CAND * c
    if not cands[cb + C_NEVER] and (retry < 0 or cands[cb + C_RETRY] < retry) then retry = cands[cb + C_RETRY]; outcome = 1 end
  end
end

-- The queue tier: queueable when every enforced limit that blocks the first candidate is (flags bit 2);
-- a limit the call can never fit is never queueable: no consumer could ever run it.
local stream_id, queue_full
if outcome == 1 and ARGV[p] == '1' then
  local queueable = true
  for j = 0, cands[CAND + C_COUNT] - 1 do
    local b = j * ENTRY
    local flags, status = entries[b + E_FLAGS], entries[b + E_STATUS]
    if flags % 2 == 0 and status ~= FITS and status ~= BELOW_DOWNGRADE and (floor(flags / 2) % 2 == 0 or status == NEVER) then
      queueable = false
    end
  end
  if queueable then
    stream_id, queue_full = enqueue(KEYS[#KEYS - 1], KEYS[#KEYS], p + 1, now, dry)
    if stream_id then outcome = 3 else outcome = 4 end
  end
end

-- The reply: per entry, its status, what remains, when it resets and when it would fit.
local out = { outcome, chosen, retry, now }
local o = 4
for c = 1, ncand do
  local first = cands[CAND * c + C_FIRST]
  for j = first, first + cands[CAND * c + C_COUNT] - 1 do
    local b = j * ENTRY
    local ki, cap, cost, status = entries[b + E_KEY], entries[b + E_CAP], entries[b + E_COST], entries[b + E_STATUS]
    -- a dry run reports what the chosen candidate's limits would have left
    local pending = dry and c == chosen and (status == FITS or status == BELOW_DOWNGRADE)
    local remaining, reset
    local kind = entries[b + E_KIND]
    if kind == ROLLING then
      remaining = state[ki]
      if pending then remaining = remaining - cost end
      reset = math.ceil((cap - remaining) * entries[b + E_PERIOD] / cap)
    elseif kind == SLOTS then
      remaining = cap - state[ki]
      if pending then remaining = remaining - cost end
      -- a slot frees when a call in flight ends (unknown here): when full, the wait Retry-After says
      reset = 0
      if remaining <= 0 and horizon[ki] > 0 then reset = slots_retry(horizon[ki], now, SLOT_RETRY_MAX) end
    else
      remaining = cap - state[ki]
      if pending then remaining = remaining - cost end
      reset = horizon[ki] - now
    end
    local r = entries[b + E_RETRY]
    if status == NEVER then r = -1 end
    out[o + 1] = status
    out[o + 2] = floor(remaining)
    out[o + 3] = reset
    out[o + 4] = r
    o = o + 4
  end
end
if stream_id then out[o + 1] = stream_id elseif queue_full then out[o + 1] = queue_full end
if resv_list and chosen > 0 and not dry then out[#out + 1] = cjson.encode(debited) end
return out
