--[[ sweep: delete succeeded jobs' records whose retention has run out.

complete.lua sweeps a few per call as jobs finish; this catches up when no
job finishes (a worker calls it with lease recovery). Records past their
expiry are never read back meanwhile (get and append check the expiry).

KEYS[1] succeeded  hash  id -> final record JSON of a succeeded job
KEYS[2] expiry     zset  id -> when its record expires (ms, server clock)
ARGV[1] limit: most records to delete

Returns how many were deleted.
]]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #stale > 0 then
  redis.call('HDEL', KEYS[1], unpack(stale))
  redis.call('ZREM', KEYS[2], unpack(stale))
end
return #stale
