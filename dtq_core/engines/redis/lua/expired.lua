--[[ expired: list leases whose deadline has passed, by the server's clock.

Read-only. Each id is then handed to release.lua, which checks it again.
Deadlines too large to be a time (above 2^53 ms, such as +inf: garbage, since
dtq never writes one) count as passed, so no id can sit in the set for ever.

KEYS[1] active  zset  the plugin's leases: id -> deadline (ms)
ARGV[1] limit: most ids to return

Returns the expired ids, oldest deadline first, then those with no real deadline.
]]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #ids < limit then
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(9007199254740992', '+inf', 'LIMIT', 0, limit - #ids)) do
    ids[#ids + 1] = id
  end
end
return ids
