--[[ renew: extend the leases a worker still holds, and tell it which of its jobs
have been asked to cancel.

KEYS[1] state   hash  id -> state JSON (holds the current token)
KEYS[2] active  zset  the plugin's leases: id -> deadline (ms, server clock)
ARGV[1] lease_ms
ARGV[2..] pairs of (id, token)

Returns pairs {id, 'lost' | 'cancel', ...}: leases the caller no longer holds
(not extended), and held jobs whose cancellation was requested (extended).
]]
local t = redis.call('TIME')
local deadline = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[1], id) or '')
  if ok and type(state) == 'table' and state.status == 'running' and state.token == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], 'XX', deadline, id)
    if state.cancel then
      out[#out + 1] = id
      out[#out + 1] = 'cancel'
    end
  else
    out[#out + 1] = id
    out[#out + 1] = 'lost'
  end
end
return out
