-- Register one connection in its user's registry and evict the oldest beyond the limit.
-- KEYS[1]  ws:user:{USER_ID}          ZSET member "POD_ID|CONNECTION_ID", score = opened (ms)
-- ARGV[1]  pod_id   ARGV[2] connection_id   ARGV[3] opened_ms   ARGV[4] limit   ARGV[5] ttl (s)
-- ARGV[6]  control channel prefix (ws:control:)   ARGV[7] the evict op ("evict")
-- ARGV[8..] the pods whose lease in ws:pods has run out (dead), as the caller last read them;
-- names and message: ordertrack/redis_layout.py
-- Returns the evicted members. The script touches KEYS[1] alone (one hash slot, so it runs on
-- a Redis Cluster): slots of dead pods are dropped first, so a dead pod never counts against
-- a user. Each evicted connection's pod is told on ws:control:POD_ID; the caller handles its own.
local user_key = KEYS[1]
local pod_id = ARGV[1]
local member = pod_id .. '|' .. ARGV[2]
local limit = tonumber(ARGV[4])

if #ARGV >= 8 then
  local dead = {}
  for i = 8, #ARGV do dead[ARGV[i]] = true end
  for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
    local owner = string.match(m, '^(.*)|')
    if owner ~= nil and dead[owner] then
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
        redis.call('PUBLISH', ARGV[6] .. owner,
          cjson.encode({op = ARGV[7], connection_id = connection_id}))
      end
    end
  end
end
return evicted
