-- Hand the next batch of a carrier's orders to one gateway replica.
-- Names (ordertrack/redis_layout.py) share the carrier's hash tag, claims included.
-- KEYS[1] ZSET gateway:polled:{CARRIER}: order_id -> when it was last claimed for a poll
--         (0 = never), shared by all replicas, so "most stale first" is cluster-wide.
-- KEYS[2] gateway:pace:{CARRIER}: the earliest time the next request may start, so the
--         replicas together spread requests over the cycle instead of bursting.
-- mode 'claim':   ARGV[2] interval, ARGV[3] batch size, ARGV[4] spacing seconds,
--                 ARGV[5] replica, ARGV[6] claim TTL ms, ARGV[7] claim key prefix
--                 (gateway:claim:{CARRIER}: + order id)
--   -> {'claimed', now, order_id...} or {'wait', seconds}
-- mode 'release': KEYS[1] as above (names the slot only), ARGV[2] replica,
--                 ARGV[3] claim key prefix, ARGV[4..] order ids
--   deletes the claims this replica still holds.
local mode = ARGV[1]
if mode == 'release' then
  for i = 4, #ARGV do
    local key = ARGV[3] .. ARGV[i]
    if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
  end
  return 1
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[2])
local batch = tonumber(ARGV[3])
local spacing = tonumber(ARGV[4])
local function fmt(x) return string.format('%.6f', x) end

local next_slot = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if next_slot > now then
  return {'wait', fmt(next_slot - now)}
end
local candidates = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now - interval),
  'LIMIT', 0, batch * 2 + 16)
local claimed = {'claimed', fmt(now)}
for _, order_id in ipairs(candidates) do
  if #claimed - 2 >= batch then break end
  if redis.call('SET', ARGV[7] .. order_id, ARGV[5], 'NX', 'PX', ARGV[6]) then
    redis.call('ZADD', KEYS[1], fmt(now), order_id)
    table.insert(claimed, order_id)
  end
end
if #claimed > 2 then
  redis.call('SET', KEYS[2], fmt(now + spacing), 'PX', math.ceil(spacing * 1000) + 1000)
  return claimed
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  return {'wait', fmt(interval)}
end
local wait = tonumber(first[2]) + interval - now
if wait < 0.05 then wait = 0.05 end -- the due ones are held by other replicas
return {'wait', fmt(wait)}
