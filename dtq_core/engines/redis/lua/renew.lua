--[[ renew: extend the leases a worker still holds.

KEYS[1] state   hash  id -> state JSON (holds the current token)
KEYS[2] active  zset  the plugin's leases: id -> deadline (ms, server clock)
ARGV[1] lease_ms
ARGV[2..] pairs of (id, token)

Returns the ids whose lease the caller no longer holds; those are not extended.
]]
local t = redis.call('TIME')
local deadline = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[1], id) or '')
  if ok and type(state) == 'table' and state.status == 'running' and state.token == ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
