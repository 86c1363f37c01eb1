--[[ bury: end a job whose stored record is malformed (not one dtq could have
written) as dead, with the reason, so garbage in Redis is never run, never
dropped without a trace, and never stalls a worker.

The live record is replaced by a final one that any dtq reads: payload ARGV[12]
(the queue's plugin, empty data), a dead state, and the error. What was found
is kept beside it for inspection, as raw_payload and raw_state (each absent if
it was missing). Like any dead job it is indexed, counted, told to waiters and
recorded as a 'dead' event.

KEYS[1] jobs    hash    id -> payload JSON
KEYS[2] state   hash    id -> state JSON
KEYS[3] active  zset    the plugin's leases: where fetch or release left the id
KEYS[4] done    hash    this id's final record
KEYS[5] index   zset    ids of dead jobs -> finish time
KEYS[6] events  stream  the namespace's lifecycle events
KEYS[7] rate    hash    outcomes counted in the current minute (client's clock)
KEYS[8] waiters hash    id -> tokens of the producers waiting for it (see wait.lua)
ARGV[1] id
ARGV[2] token: the fencing token fetch leased the job with; or '' for an id that
        fetch or release set aside, whose entry in active must then have expired
ARGV[3] error JSON: {"type": "MalformedRecord", "message": "malformed record: ...", ...}
ARGV[4] plugin name: of the queue the id was in
ARGV[5] retention in seconds of the final record
ARGV[6] reply prefix: a waiter's reply list is this followed by its token
ARGV[7] dead index cap
ARGV[8] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[9] lifetime in seconds of the minute's counts
ARGV[10], ARGV[11] the error's type and short message, for the event
ARGV[12] the final record's payload: canonical JSON naming the plugin, with empty data

Returns 1 buried; 0 nothing to do (another worker buried it first, or the lease
is not the caller's, or there is no record at all).
]]
--#include tell
local id = ARGV[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local payload = redis.call('HGET', KEYS[1], id)
local raw = redis.call('HGET', KEYS[2], id)

if ARGV[2] ~= '' then
  local ok, state = pcall(cjson.decode, raw or '')
  if not ok or type(state) ~= 'table' or state.token ~= ARGV[2] or state.status ~= 'running' then
    return 0
  end
else
  local deadline = tonumber(redis.call('ZSCORE', KEYS[3], id))
  if not deadline or (deadline > now and deadline < 9007199254740992) then return 0 end
end
redis.call('ZREM', KEYS[3], id)
if not payload and not raw then return 0 end

local ttl = tonumber(ARGV[5])
local state = {status = 'dead', attempts = 0, lost = 0, priority = 0, created = now, finished = now}
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'payload', ARGV[12], 'state', cjson.encode(state), 'error', ARGV[3])
if payload then redis.call('HSET', KEYS[4], 'raw_payload', payload) end
if raw then redis.call('HSET', KEYS[4], 'raw_state', raw) end
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('ZADD', KEYS[5], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - ttl * 1000)
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[7]) - 1)
redis.call('HINCRBY', KEYS[7], ARGV[4] .. '|dead', 1)
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[9]))
local cap = tonumber(ARGV[8])
if cap > 0 then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', cap, '*', 'type', 'dead', 'time', now, 'job', id,
    'plugin', ARGV[4], 'attempt', 0, 'worker', '', 'error_type', ARGV[10], 'error_message', ARGV[11])
end
tell_one(KEYS[8], ARGV[6], id, id)
return 1
