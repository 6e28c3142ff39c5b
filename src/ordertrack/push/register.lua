-- Register a batch of connections, each in its user's registry, evicting the oldest beyond
-- the limit: one script call for the whole batch (one round trip, one atomic step).
-- KEYS[i]  ws:user:{USER_ID} of connection i   ZSET member "POD_ID|CONNECTION_ID",
--          score = opened (ms)
-- ARGV[1] pod_id   ARGV[2] opened_ms   ARGV[3] limit   ARGV[4] ttl (s)
-- ARGV[5] pod liveness key prefix (ws:pod:)   ARGV[6] control channel prefix (ws:control:)
-- ARGV[7] the evict op ("evict"); names and message: ordertrack/redis_layout.py
-- ARGV[7 + i] connection_id of connection i
-- Returns one array per connection: {1, evicted members...}, or {0, error text} when that
-- user's key cannot be used (a WRONGTYPE, say): that connection fails alone, not its batch.
-- Slots held by pods whose liveness key ws:pod:POD_ID is gone (a crashed pod) are dropped
-- first, so a dead pod never counts against a user. Each evicted connection's pod is told on
-- ws:control:POD_ID; the caller handles its own.
local pod_id = ARGV[1]
local opened_ms = ARGV[2]
local limit = tonumber(ARGV[3])
local ttl = ARGV[4]
local pod_prefix, control_prefix, evict_op = ARGV[5], ARGV[6], ARGV[7]
local alive = {[pod_id] = true}

local function owner_alive(owner)
  if alive[owner] == nil then
    alive[owner] = redis.call('EXISTS', pod_prefix .. owner) == 1
  end
  return alive[owner]
end

local function register(user_key, member)
  for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
    local owner = string.match(m, '^(.*)|')
    if owner ~= nil and not owner_alive(owner) then
      redis.call('ZREM', user_key, m)
    end
  end
  redis.call('ZADD', user_key, opened_ms, member)
  redis.call('EXPIRE', user_key, ttl)
  local result = {1}
  local excess = redis.call('ZCARD', user_key) - limit
  if excess > 0 then
    for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
      if excess <= 0 then break end
      if m ~= member then
        redis.call('ZREM', user_key, m)
        table.insert(result, m)
        excess = excess - 1
        local owner, connection_id = string.match(m, '^(.*)|(.*)$')
        if owner ~= pod_id then
          redis.call('PUBLISH', control_prefix .. owner,
            cjson.encode({op = evict_op, connection_id = connection_id}))
        end
      end
    end
  end
  return result
end

local results = {}
for i, user_key in ipairs(KEYS) do
  local ok, result = pcall(register, user_key, pod_id .. '|' .. ARGV[7 + i])
  if ok then
    results[i] = result
  else
    results[i] = {0, type(result) == 'table' and result.err or tostring(result)}
  end
end
return results
