--[[ sweep: delete succeeded jobs' records whose retention has run out.

complete.lua sweeps a few per call as jobs finish; this catches up when no
job finishes (a worker calls it with lease recovery). Records past their
expiry are never read back meanwhile (get and append check the expiry).

KEYS[1] succeeded  hash  id -> final record JSON of a succeeded job
KEYS[2] expiry     zset  id -> when its record expires (ms, server clock)
ARGV[1] limit: most records to delete

Returns how many were deleted.
]]
--#include sweep
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return sweep(KEYS[1], KEYS[2], now, tonumber(ARGV[1]))
