--[[ cancel: stop a job. A queued or delayed job is cancelled at once and never
runs; a running job is marked, so its worker (told at its next lease renewal)
and its plugin can stop it.

KEYS[1] jobs       hash  id -> payload JSON
KEYS[2] state      hash  id -> state JSON
KEYS[3] ready      zset  the plugin's queue
KEYS[4] scheduled  zset  the plugin's delayed jobs
KEYS[5] done       hash    this id's final record
KEYS[6] events     stream  the namespace's lifecycle events
KEYS[7] rate       hash    outcomes counted in the current minute (client's clock)
KEYS[8] waiters    hash    id -> tokens of the producers waiting for it (see wait.lua)
KEYS[9] succeeded  hash    id -> final record of a succeeded job (see complete.lua)
KEYS[10] expiry    zset    id -> when its `succeeded` record expires (ms)
ARGV[1] id
ARGV[2] retention in seconds of the final record
ARGV[3] reply prefix: a waiter's reply list is this followed by its token
ARGV[4] plugin name
ARGV[5] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[6] lifetime in seconds of the minute's counts

Returns 1 cancelled, 2 cancellation requested (running), 0 already final,
-1 no such job; an error, with nothing written, for a state without a payload.
]]
--#include tell
local id = ARGV[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not ok or type(state) ~= 'table' then
  if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
  -- A succeeded job's record is a field of its own hash, until its expiry (swept or not).
  local expires = tonumber(redis.call('ZSCORE', KEYS[10], id))
  local kept = redis.call('HEXISTS', KEYS[9], id) == 1 and (expires == nil or expires > now)
  return kept and 0 or -1
end

-- Record the lifecycle event unless events are off.
local function event(kind)
  local cap = tonumber(ARGV[5])
  if cap <= 0 then return end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', cap, '*', 'type', kind, 'time', now, 'job', id,
    'plugin', ARGV[4], 'attempt', tonumber(state.attempts) or 0,
    'worker', type(state.worker) == 'string' and state.worker or '')
end

if state.status == 'running' then
  -- Asked once: a repeated request changes nothing and records nothing.
  if not state.cancel then
    state.cancel = 1
    redis.call('HSET', KEYS[2], id, cjson.encode(state))
    event('cancel_requested')
  end
  return 2
end

local payload = redis.call('HGET', KEYS[1], id)
if not payload then
  -- No job a worker could run: fetch sets such a record aside as dead, with its
  -- reason. Refused before any write (Redis keeps a failing script's writes).
  return redis.error_reply('job ' .. id .. ' has a state but no payload (a damaged record), so it ' ..
    'cannot be cancelled; a worker that meets it ends it dead with that reason')
end
state.status = 'cancelled'
state.finished = now
state.due = nil
redis.call('ZREM', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('HSET', KEYS[5], 'payload', payload, 'state', cjson.encode(state))
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[7], ARGV[4] .. '|cancelled', 1)
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[6]))
event('cancelled')
tell_one(KEYS[8], ARGV[3], id, id)
return 1
