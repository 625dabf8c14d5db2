--[[
  check-limits: decide one LLM call against every limit that applies to it, atomically.

  The call has one or more candidates (the requested model, then its fallback chain). The first
  candidate whose enforced limits all fit is debited on all of its limits and chosen; nothing
  else is debited. If none fits, nothing is debited and the earliest time any candidate would
  fit is returned. Time comes from the server (TIME), never from the caller.

  KEYS[1..N]  limit state keys (hashes), deduplicated across candidates
                rolling (token bucket): v = level (units available), t = last update (ms)
                calendar quota:         u = used units, e = window end (ms, epoch)
              when a queue is given (ARGV after the candidates), its stream key is KEYS[N]
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
      flags      bit 1 = shadow (never blocks; reported); bit 2 = queueable (when_exhausted: queue)
      downgrade  remaining units below which a candidate that has a next candidate is skipped (0 = off)

  then, optionally, the queue tier (used only when no candidate fits and every enforced limit that
  blocks the first candidate is queueable):
    Q = 1, max_length, id, tenant, model, cost, body
    The call is appended to the stream KEYS[N] (XADD, never trimmed) if XLEN < max_length.

  Returns { outcome, chosen, retry_ms, now_ms, <per candidate, per entry: status, remaining, reset_ms, retry_ms>, stream_id? }
    outcome  0 = allowed, 1 = denied (retry later), 2 = denied (no candidate can ever fit),
             3 = queued (stream id appended last), 4 = denied, queue full
    chosen   1-based candidate index that was debited, 0 when denied
    status   0 = fits, 1 = does not fit now, 2 = can never fit (cost > capacity), 3 = fits but below downgrade
    remaining  units left after this call (if debited) or now
    reset_ms   rolling: ms until the bucket is full again; calendar: ms until the window ends
    retry_ms   ms until this entry would fit this cost (0 if it fits now, -1 never)
]]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ncand = tonumber(ARGV[1])
local dry = ARGV[2] == '1'

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

-- current state per key, read once
local cur = {}
local function current(ki, kind, cap, period, tz)
  local s = cur[ki]
  if s then return s end
  local h = redis.call('HMGET', KEYS[ki], 'v', 't', 'u', 'e')
  if kind == 1 then
    local v, ts = tonumber(h[1]), tonumber(h[2])
    local level = cap
    if v and ts then
      local elapsed = now - ts
      if elapsed < 0 then elapsed = 0 end -- server clock stepped back: no refill, no harm
      if elapsed >= period then level = cap else
        level = v + elapsed * cap / period
        if level > cap then level = cap end
      end
    end
    s = { level = level }
  else
    local u, e = tonumber(h[3]), tonumber(h[4])
    if not u or not e or now >= e then
      u = 0
      e = window_end(now, period, tz)
    end
    s = { used = u, e = e }
  end
  cur[ki] = s
  return s
end

-- parse and evaluate every candidate
local cands = {}
local p = 3
for c = 1, ncand do
  local ne = tonumber(ARGV[p]); p = p + 1
  local cand = { entries = {}, hard = true, soft = true, never = false, retry = 0 }
  for i = 1, ne do
    local e = {
      ki = tonumber(ARGV[p]), kind = tonumber(ARGV[p + 1]), cap = tonumber(ARGV[p + 2]),
      period = tonumber(ARGV[p + 3]), tz = tonumber(ARGV[p + 4]), cost = tonumber(ARGV[p + 5]),
      shadow = tonumber(ARGV[p + 6]) % 2 == 1, queueable = math.floor(tonumber(ARGV[p + 6]) / 2) % 2 == 1,
      down = tonumber(ARGV[p + 7]),
    }
    p = p + 8
    local s = current(e.ki, e.kind, e.cap, e.period, e.tz)
    if e.kind == 1 then
      e.fits = s.level >= e.cost
      e.avail = s.level
      if e.fits then e.retry = 0 else
        e.retry = math.ceil((e.cost - s.level) * e.period / e.cap)
        -- floating point: waiting exactly retry ms must be enough (the refill check uses the same formula)
        if s.level + e.retry * e.cap / e.period < e.cost then e.retry = e.retry + 1 end
      end
    else
      e.avail = e.cap - s.used
      e.fits = s.used + e.cost <= e.cap
      if e.fits then e.retry = 0 else e.retry = s.e - now end
    end
    e.never = e.cost > e.cap
    e.below = e.fits and e.down > 0 and (e.avail - e.cost) < e.down
    if not e.shadow then
      if not e.fits then
        cand.hard = false
        if e.never then cand.never = true elseif e.retry > cand.retry then cand.retry = e.retry end
      elseif e.below then
        cand.soft = false
      end
    end
    cand.entries[i] = e
  end
  if not cand.hard then cand.soft = false end
  cands[c] = cand
end

local chosen = 0
for c = 1, ncand do
  if cands[c].soft or (c == ncand and cands[c].hard) then chosen = c; break end
end
if chosen == 0 then
  -- every candidate is either over a limit or below a downgrade threshold: prefer serving over denying
  for c = 1, ncand do
    if cands[c].hard then chosen = c; break end
  end
end

if chosen > 0 and not dry then
  for _, e in ipairs(cands[chosen].entries) do
    if e.fits then
      local s = cur[e.ki]
      if e.kind == 1 then
        s.level = s.level - e.cost
        redis.call('HSET', KEYS[e.ki], 'v', s.level, 't', now)
        redis.call('PEXPIRE', KEYS[e.ki], e.period)
      else
        s.used = s.used + e.cost
        redis.call('HSET', KEYS[e.ki], 'u', s.used, 'e', s.e)
        redis.call('PEXPIRE', KEYS[e.ki], s.e - now + 1000)
      end
    end
  end
end

local outcome, retry = 0, 0
if chosen == 0 then
  outcome = 2
  retry = -1
  for c = 1, ncand do
    if not cands[c].never and (retry < 0 or cands[c].retry < retry) then retry = cands[c].retry; outcome = 1 end
  end
end

local stream_id
if outcome == 1 and ARGV[p] == '1' then
  local queueable = true
  for _, e in ipairs(cands[1].entries) do
    if not e.shadow and not e.fits and not e.queueable then queueable = false end
  end
  if queueable then
    local qkey = KEYS[#KEYS]
    if redis.call('XLEN', qkey) < tonumber(ARGV[p + 1]) then
      if not dry then
        stream_id = redis.call('XADD', qkey, '*', 'id', ARGV[p + 2], 'tenant', ARGV[p + 3], 'model', ARGV[p + 4],
          'cost', ARGV[p + 5], 'enqueued_at', now, 'body', ARGV[p + 6])
      else
        stream_id = 'dry-run'
      end
      outcome = 3
    else
      outcome = 4
    end
  end
end

local out = { outcome, chosen, retry, now }
for c = 1, ncand do
  for _, e in ipairs(cands[c].entries) do
    local s = cur[e.ki]
    local debited = (c == chosen and e.fits and not dry)
    local status = 0
    if e.never then status = 2 elseif not e.fits then status = 1 elseif e.below then status = 3 end
    local remaining, reset
    if e.kind == 1 then
      remaining = s.level
      if debited then remaining = s.level end
      if not debited and c == chosen and e.fits and dry then remaining = s.level - e.cost end
      reset = math.ceil((e.cap - remaining) * e.period / e.cap)
    else
      remaining = e.cap - s.used
      if not debited and c == chosen and e.fits and dry then remaining = remaining - e.cost end
      reset = s.e - now
    end
    local r = e.retry
    if e.never then r = -1 end
    out[#out + 1] = status
    out[#out + 1] = math.floor(remaining)
    out[#out + 1] = reset
    out[#out + 1] = r
  end
end
if stream_id then out[#out + 1] = stream_id end
return out
