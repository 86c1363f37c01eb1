-- (lib/sweep.lua, put in place of "--#include sweep" when the script is loaded)
-- Delete up to `limit` succeeded records whose retention ran out by `now` (ms);
-- return how many.
local function sweep(succeeded, expiry, now, limit)
  local stale = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, limit)
  if #stale > 0 then
    redis.call('HDEL', succeeded, unpack(stale))
    redis.call('ZREM', expiry, unpack(stale))
  end
  return #stale
end
