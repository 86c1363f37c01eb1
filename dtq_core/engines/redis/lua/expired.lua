--[[ expired: list leases whose deadline has passed, by the server's clock.

Read-only. Each id is then handed to recover.lua, which checks it again.

KEYS[1] active  zset  the plugin's leases: id -> deadline (ms)
ARGV[1] limit: most ids to return

Returns the expired ids, oldest deadline first.
]]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
