-- Register one connection in its user's registry and evict the oldest beyond the limit.
-- KEYS[1]  ws:user:{USER_ID}          ZSET member "POD_ID|CONNECTION_ID", score = opened (ms)
-- ARGV[1]  pod_id   ARGV[2] connection_id   ARGV[3] opened_ms   ARGV[4] limit   ARGV[5] ttl (s)
-- ARGV[6]  pod liveness key prefix (ws:pod:)   ARGV[7] control channel prefix (ws:control:)
-- ARGV[8]  the evict op ("evict"); names and message: ordertrack/redis_layout.py
-- Returns the evicted members. Slots held by pods whose liveness key ws:pod:POD_ID is gone
-- (a crashed pod) are dropped first, so a dead pod never counts against a user.
-- Each evicted connection's pod is told on ws:control:POD_ID; the caller handles its own.
local user_key = KEYS[1]
local pod_id = ARGV[1]
local member = pod_id .. '|' .. ARGV[2]
local limit = tonumber(ARGV[4])

local alive = {}
for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
  local owner = string.match(m, '^(.*)|')
  if owner ~= nil then
    if alive[owner] == nil then
      alive[owner] = (owner == pod_id) or (redis.call('EXISTS', ARGV[6] .. owner) == 1)
    end
    if not alive[owner] then
      redis.call('ZREM', user_key, m)
    end
  end
end

redis.call('ZADD', user_key, ARGV[3], member)
redis.call('EXPIRE', user_key, ARGV[5])

local evicted = {}
local excess = redis.call('ZCARD', user_key) - limit
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
    if excess <= 0 then break end
    if m ~= member then
      redis.call('ZREM', user_key, m)
      table.insert(evicted, m)
      excess = excess - 1
      local owner, connection_id = string.match(m, '^(.*)|(.*)$')
      if owner ~= pod_id then
        redis.call('PUBLISH', ARGV[7] .. owner,
          cjson.encode({op = ARGV[8], connection_id = connection_id}))
      end
    end
  end
end
return evicted
