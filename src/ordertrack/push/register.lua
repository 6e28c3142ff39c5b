-- Register a batch of connections, each in its user's registry, evicting the oldest beyond
-- the limit: one script call for the whole batch (one round trip, one atomic step).
-- KEYS[i]  ws:user:{USER_ID} of connection i   ZSET member "POD_ID|CONNECTION_ID",
--          score = opened (ms)
-- ARGV[1] pod_id   ARGV[2] opened_ms   ARGV[3] limit   ARGV[4] ttl (s)
-- ARGV[5] control channel prefix (ws:control:)   ARGV[6] the evict op ("evict")
-- ARGV[7] D, the number of dead pods; ARGV[8 .. 7 + D] the pods whose lease in ws:pods has run
-- out, as the caller last read them (registry.py); names and message: ordertrack/redis_layout.py
-- ARGV[7 + D + i] connection_id of connection i
-- Returns one array per connection: {1, evicted members...}, or {0, error text} when that
-- user's key cannot be used (a WRONGTYPE, say): that connection fails alone, not its batch.
-- The script touches only the users' keys (on a Redis Cluster the caller groups a batch by
-- hash slot): slots held by dead pods are dropped first, so a dead pod never counts against a
-- user. Each evicted connection's pod is told on ws:control:POD_ID; the caller handles its own.
local pod_id = ARGV[1]
local opened_ms = ARGV[2]
local limit = tonumber(ARGV[3])
local ttl = ARGV[4]
local control_prefix, evict_op = ARGV[5], ARGV[6]
local dead_count = tonumber(ARGV[7])
local dead = {}
for i = 8, 7 + dead_count do dead[ARGV[i]] = true end
local first_connection = 7 + dead_count

local function register(user_key, member)
  for _, m in ipairs(redis.call('ZRANGE', user_key, 0, -1)) do
    local owner = string.match(m, '^(.*)|')
    if owner ~= nil and dead[owner] and owner ~= pod_id then
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
  local ok, result = pcall(register, user_key, pod_id .. '|' .. ARGV[first_connection + i])
  if ok then
    results[i] = result
  else
    results[i] = {0, type(result) == 'table' and result.err or tostring(result)}
  end
end
return results
