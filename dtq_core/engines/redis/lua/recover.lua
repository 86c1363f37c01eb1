--[[ recover: give back a job whose lease expired (its worker died or hung).

The job returns to its place in the ready queue, or, once it has lost too many
leases (it keeps killing its workers), ends 'dead' with the reason.

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON
KEYS[3] active  zset  the plugin's leases: id -> deadline
KEYS[4] ready   zset  the plugin's queue
KEYS[5] signal  list  wake-up hints
KEYS[6] done    hash  this id's final record
ARGV[1] id
ARGV[2] max lost leases: the count at which the job goes dead
ARGV[3] retention in seconds of a dead job's record
ARGV[4] error JSON recorded when the job goes dead
ARGV[5] channel published to with the id when the job goes dead
ARGV[6] signal cap

Returns 1 requeued, 2 dead, 0 nothing to do (the lease was renewed or the job
finished meanwhile).
]]
local id = ARGV[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = tonumber(redis.call('ZSCORE', KEYS[3], id))
if not deadline or deadline > now then
  return 0
end
redis.call('ZREM', KEYS[3], id)
local payload = redis.call('HGET', KEYS[1], id)
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not payload or not ok or type(state) ~= 'table' or state.status ~= 'running' then
  return 0
end

state.lost = (tonumber(state.lost) or 0) + 1
state.token = nil
if state.lost >= tonumber(ARGV[2]) then
  state.status = 'dead'
  state.finished = now
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HSET', KEYS[6], 'payload', payload, 'state', cjson.encode(state), 'error', ARGV[4])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[3]))
  redis.call('PUBLISH', ARGV[5], id)
  return 2
end

state.status = 'queued'
redis.call('HSET', KEYS[2], id, cjson.encode(state))
local priority = tonumber(state.priority) or 0
redis.call('ZADD', KEYS[4], string.format('%.0f', -priority * 2^40 + (tonumber(state.seq) or 0)), id)
if redis.call('LLEN', KEYS[5]) < tonumber(ARGV[6]) then
  redis.call('LPUSH', KEYS[5], '1')
end
return 1
