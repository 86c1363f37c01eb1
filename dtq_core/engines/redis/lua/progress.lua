--[[ progress: record how far a running job has got, if the caller holds its lease.

KEYS[1] state  hash  id -> state JSON
ARGV[1] id
ARGV[2] token
ARGV[3] progress: a number from 0 to 1, or '' to leave it
ARGV[4] message: a short text, or '' to leave it

Returns 1 recorded, 2 recorded and the job's cancellation was requested,
0 the lease is not the caller's (nothing written).
]]
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[1], ARGV[1]) or '')
if not ok or type(state) ~= 'table' or state.status ~= 'running' or state.token ~= ARGV[2] then
  return 0
end
if ARGV[3] ~= '' then state.progress = tonumber(ARGV[3]) end
if ARGV[4] ~= '' then state.message = ARGV[4] end
-- A state JSON cannot write back (put there by something else) is left as it is.
local encoded_ok, encoded = pcall(cjson.encode, state)
if not encoded_ok then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return state.cancel and 2 or 1
