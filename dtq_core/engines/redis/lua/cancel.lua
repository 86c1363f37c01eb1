--[[ cancel: stop a job. A queued or delayed job is cancelled at once and never
runs; a running job is marked, so its worker (told at its next lease renewal)
and its plugin can stop it.

KEYS[1] jobs       hash  id -> payload JSON
KEYS[2] state      hash  id -> state JSON
KEYS[3] ready      zset  the plugin's queue
KEYS[4] scheduled  zset  the plugin's delayed jobs
KEYS[5] done       hash  this id's final record
ARGV[1] id
ARGV[2] retention in seconds of the final record
ARGV[3] channel published to with the id when the job becomes final

Returns 1 cancelled, 2 cancellation requested (running), 0 already final,
-1 no such job.
]]
local id = ARGV[1]
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not ok or type(state) ~= 'table' then
  return redis.call('EXISTS', KEYS[5]) == 1 and 0 or -1
end
if state.status == 'running' then
  state.cancel = 1
  redis.call('HSET', KEYS[2], id, cjson.encode(state))
  return 2
end

local t = redis.call('TIME')
state.status = 'cancelled'
state.finished = t[1] * 1000 + math.floor(t[2] / 1000)
state.due = nil
local payload = redis.call('HGET', KEYS[1], id)
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HSET', KEYS[5], 'payload', payload, 'state', cjson.encode(state))
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[3], id)
return 1
