--[[ heartbeat: register a live worker, or refresh its registration.

KEYS[1] workers  zset  worker id -> registration expiry (ms, server clock)
KEYS[2] worker   hash  this worker's description
ARGV[1] worker id
ARGV[2] ttl_ms: the registration lapses this long after the last heartbeat
ARGV[3..] field, value pairs of the description (host, pid, plugins, ...)

Returns the number of live workers. Lapsed registrations are dropped here.
]]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], 'last_seen', now, unpack(fields))
redis.call('PEXPIRE', KEYS[2], ttl)
return redis.call('ZCARD', KEYS[1])
