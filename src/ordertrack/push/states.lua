-- The state hashes of a batch of orders, for each connection's connection_ack, in one call
-- (one reply to parse instead of one HGETALL per connection). Read-only.
-- KEYS[i]  order:tracking:state:{ORDER_ID} of connection i (names: ordertrack/redis_layout.py)
-- Returns one array per key: {1, field, value, field, value...} (HGETALL's answer; {1} for an
-- order nothing was published for yet), or {0, error text} when that key cannot be read (a
-- WRONGTYPE, say): that connection fails alone, not its batch.
-- On a Redis Cluster the caller groups the keys by hash slot (one call per slot).
local results = {}
for i, key in ipairs(KEYS) do
  local ok, fields = pcall(redis.call, 'HGETALL', key)
  if ok then
    table.insert(fields, 1, 1)
    results[i] = fields
  else
    results[i] = {0, type(fields) == 'table' and fields.err or tostring(fields)}
  end
end
return results
