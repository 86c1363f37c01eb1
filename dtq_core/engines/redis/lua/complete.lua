--[[ complete: record the outcome of an attempt, only if the caller still holds
the job's lease (its fencing token).

A final outcome moves the live record (payload and state) into the job's own
done hash, which expires after the retention time, and tells subscribers. A
retry puts the job back among the delayed jobs, due after the backoff.

KEYS[1] jobs       hash  id -> payload JSON
KEYS[2] state      hash  id -> state JSON
KEYS[3] active     zset  the plugin's leases: id -> deadline
KEYS[4] scheduled  zset  the plugin's delayed jobs: id -> due time
KEYS[5] done       hash  this id's final record: payload, state, result, error
KEYS[6] errors     list  this id's attempt errors (JSON), the newest last
KEYS[7] index      zset  ids of final jobs with this status -> finish time
KEYS[8] events     stream  the namespace's lifecycle events
KEYS[9] rate       hash    outcomes counted in the current minute (of the client's
                           clock): '<plugin>|<status>' -> count
ARGV[1] id
ARGV[2] token: the fencing token the worker got from fetch
ARGV[3] outcome: 'succeeded', 'failed', 'dead', 'cancelled' or 'retry'
ARGV[4] result JSON, or '' for none
ARGV[5] error JSON, or '' for none
ARGV[6] retention in seconds of the final record (and of the errors)
ARGV[7] channel published to with the id once the job is final
ARGV[8] retry delay in ms (outcome 'retry')
ARGV[9] index cap: most ids kept in the index; 0 to not index this outcome
ARGV[10] most errors kept per job
ARGV[11] plugin name
ARGV[12] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[13] the event's error type, or '' for none
ARGV[14] the event's error message (short), or ''
ARGV[15] lifetime in seconds of the minute's counts

Returns 1 when recorded (also when this very attempt was already recorded: a
client retrying after a dropped connection); 0 when the lease is no longer the
caller's (it expired and the job went to another worker, or the job is gone),
or the record is malformed: then nothing is written.
]]
local id = ARGV[1]
local token = ARGV[2]
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not ok or type(state) ~= 'table' then
  local fok, final = pcall(cjson.decode, redis.call('HGET', KEYS[5], 'state') or '')
  return (fok and type(final) == 'table' and final.token == token) and 1 or 0
end
if state.token ~= token then
  return 0
end
if state.status ~= 'running' then
  return 1
end
-- A state JSON cannot write back (NaN or Infinity, put there by something
-- else) is checked before any write: nothing is recorded, and lease recovery
-- buries the job (release.lua, bury.lua).
if not pcall(cjson.encode, state) then
  return 0
end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[6])

-- Count the outcome in its minute, and record its lifecycle event unless events are off.
local function record(kind, ...)
  redis.call('HINCRBY', KEYS[9], ARGV[11] .. '|' .. kind, 1)
  redis.call('EXPIRE', KEYS[9], tonumber(ARGV[15]))
  local cap = tonumber(ARGV[12])
  if cap <= 0 then return end
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', cap, '*', 'type', kind, 'time', now, 'job', id,
    'plugin', ARGV[11], 'attempt', tonumber(state.attempts) or 0, 'worker', state.worker or '',
    'error_type', ARGV[13], 'error_message', ARGV[14], ...)
end

redis.call('ZREM', KEYS[3], id)
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[6], ARGV[5])
  redis.call('LTRIM', KEYS[6], -tonumber(ARGV[10]), -1)
  redis.call('EXPIRE', KEYS[6], ttl)
end

if ARGV[3] == 'retry' then
  state.status = 'scheduled'
  state.due = now + tonumber(ARGV[8])
  redis.call('HSET', KEYS[2], id, cjson.encode(state))
  redis.call('ZADD', KEYS[4], state.due, id)
  record('retrying', 'delay_ms', tonumber(ARGV[8]))
  return 1
end

state.status = ARGV[3]
state.finished = now
local payload = redis.call('HGET', KEYS[1], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HSET', KEYS[5], 'payload', payload, 'state', cjson.encode(state))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[5], 'result', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[5], 'error', ARGV[5]) end
redis.call('EXPIRE', KEYS[5], ttl)
local cap = tonumber(ARGV[9])
if cap > 0 then
  redis.call('ZADD', KEYS[7], now, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - ttl * 1000)
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -cap - 1)
end
record(ARGV[3])
redis.call('PUBLISH', ARGV[7], id)
return 1
