-- Publish one new tracking event of an order: stream entry + current state + channel message,
-- atomically, so the three never disagree.
-- KEYS[1] stream  order:tracking:stream:{ORDER_ID}   (names: ordertrack/redis_layout.py)
-- KEYS[2] state   order:tracking:state:{ORDER_ID}
-- ARGV[1] seq (integer > 0)    ARGV[2] message JSON
-- ARGV[3] classic channel order:tracking:ORDER_ID ('' = no PUBLISH: PUBSUB_MODE=sharded)
-- ARGV[4] stream MAXLEN        ARGV[5] TTL seconds for stream and state (0 = none)
-- ARGV[6..10] the order's state after this event: status, location, timestamp (its last
--              update), estimated_delivery, carrier ('' for None)
-- ARGV[11] shard channel order:tracking:shard:{ORDER_ID} ('' or absent = no SPUBLISH:
--          PUBSUB_MODE=pattern); it shares KEYS' hash tag, so on a cluster the SPUBLISH stays
--          in this script's slot (Redis 7 refuses a script's shard channel of another slot)
-- Returns 1 when published, 0 when seq is not newer than what the order already has
-- (a replay after a crash or a second replica): nothing is written or published then.
local seq = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') or 0
if seq <= current then
  return 0
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local last_seq = tonumber(string.match(last[1][1], '^(%d+)-'))
  if last_seq and seq <= last_seq then
    return 0
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], ARGV[1] .. '-0', 'msg', ARGV[2])
-- the state never moves back to an older update (ISO 8601 UTC with Z compares as text): a
-- late scan gets its seq and is delivered, the status stays with the newer scan. The gateway
-- passes the store's state (models.next_order_state), which never goes back; this guards a
-- publish of a bare event (tools, tests)
local newest = redis.call('HGET', KEYS[2], 'timestamp')
if newest and newest ~= '' and ARGV[8] < newest then
  redis.call('HSET', KEYS[2], 'carrier', ARGV[10], 'seq', ARGV[1])
else
  redis.call('HSET', KEYS[2],
    'status', ARGV[6], 'location', ARGV[7], 'timestamp', ARGV[8],
    'estimated_delivery', ARGV[9], 'carrier', ARGV[10], 'seq', ARGV[1])
end
local ttl = tonumber(ARGV[5])
if ttl and ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], ARGV[2])
end
if ARGV[11] and ARGV[11] ~= '' then
  redis.call('SPUBLISH', ARGV[11], ARGV[2])
end
return 1
