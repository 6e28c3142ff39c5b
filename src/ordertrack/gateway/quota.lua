-- Carrier request quota shared by every gateway replica: a sliding-window log.
-- Each granted request is a member of the ZSET KEYS[1] scored by Redis' own clock (TIME), so
-- replicas with skewed clocks still agree. A request is granted only when EVERY window
-- (e.g. 3600 s / 2000 and 60 s / 100) has room, so no window of that length, wherever it
-- starts, ever holds more than its limit: a hard ceiling, unlike a token bucket, whose
-- burst comes on top of the rate.
-- KEYS[1] log ZSET gateway:quota:{CARRIER}   KEYS[2] pause key gateway:quota:{CARRIER}:paused
-- ARGV[1] mode: acquire | peek | pause | refund
-- ARGV[2] member (acquire/refund: unique id of this request) or until (pause: epoch seconds)
-- ARGV[3] number of windows n, then ARGV[4..] window seconds, limit (n pairs)
-- Returns {allowed 0/1, wait seconds (string), remaining (min over windows), paused_until (string)}
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local mode = ARGV[1]

if mode == 'refund' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {1, '0', 0, '0'}
end

if mode == 'pause' then
  local until_ts = tonumber(ARGV[2])
  local current = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if until_ts > current and until_ts > now then
    redis.call('SET', KEYS[2], string.format('%.6f', until_ts),
      'PX', math.ceil((until_ts - now) * 1000) + 1000)
  end
end

local paused_until = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local n = tonumber(ARGV[3])
local longest = 0
for i = 0, n - 1 do
  local window = tonumber(ARGV[4 + 2 * i])
  if window > longest then longest = window end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - longest))

local wait = 0
local remaining = nil
for i = 0, n - 1 do
  local window = tonumber(ARGV[4 + 2 * i])
  local limit = tonumber(ARGV[5 + 2 * i])
  local since = '(' .. string.format('%.6f', now - window)
  local used = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  local left = limit - used
  if remaining == nil or left < remaining then remaining = left end
  if left <= 0 then
    -- room comes back when the (used - limit + 1)-th oldest request leaves this window
    local entry = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
      'LIMIT', used - limit, 1)
    local w = tonumber(entry[2]) + window - now
    if w > wait then wait = w end
  end
end
if remaining == nil then remaining = 0 end
if remaining < 0 then remaining = 0 end

if paused_until > now then
  local w = paused_until - now
  if w > wait then wait = w end
  return {0, string.format('%.6f', wait), remaining, string.format('%.6f', paused_until)}
end

if mode == 'acquire' then
  if wait > 0 then
    return {0, string.format('%.6f', wait), remaining, '0'}
  end
  redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.ceil(longest * 1000) + 1000)
  return {1, '0', remaining - 1, '0'}
end
return {0, string.format('%.6f', wait), remaining, '0'}
