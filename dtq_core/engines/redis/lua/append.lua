--[[ append: create a job unless a job with its id already exists.

KEYS[1] jobs       hash    id -> payload JSON {"data","plugin"} of every live job
KEYS[2] state      hash    id -> state JSON of every live job (see fetch.lua)
KEYS[3] ready      zset    the plugin's queue: id scored by priority, then arrival
KEYS[4] scheduled  zset    the plugin's delayed jobs: id -> due time (ms)
KEYS[5] signal     list    wake-up hints for workers blocked on this plugin
KEYS[6] seq        string  arrival counter of the namespace
KEYS[7] done       hash    this id's final record, while it is retained
KEYS[8] plugins    set     names of the plugins that have ever had a job (for stats)
KEYS[9] events     stream  the namespace's lifecycle events
ARGV[1] id
ARGV[2] payload: canonical JSON, compared byte for byte with an existing job's
ARGV[3] options: JSON object of scalars (priority, max_retries, retry_backoff_s,
        timeout_s), the start of the job's state
ARGV[4] delay in ms from now (server clock); 0 for none
ARGV[5] due time in ms since the epoch (an ETA); 0 for none; wins over the delay
ARGV[6] signal cap: the signal list is kept at most this long
ARGV[7] plugin name
ARGV[8] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none

Returns {1, created_ms, due_ms} when the job was created (due_ms 0 if queued now);
        {0, 1} when the id exists with the same payload (a repeated append);
        {0, 0} when the id exists with a different payload (a conflict).
]]
local id = ARGV[1]
local existing = redis.call('HGET', KEYS[1], id)
if not existing then
  existing = redis.call('HGET', KEYS[7], 'payload')
end
if existing then
  return {0, existing == ARGV[2] and 1 or 0}
end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

-- Record the lifecycle event (fields of dtq_core.Event) unless events are off.
local function event(kind, ...)
  local cap = tonumber(ARGV[8])
  if cap <= 0 then return end
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', cap, '*', 'type', kind, 'time', now, 'job', id,
    'plugin', ARGV[7], 'attempt', 0, 'worker', '', ...)
end

local state = cjson.decode(ARGV[3])
state.priority = tonumber(state.priority) or 0
state.seq = redis.call('INCR', KEYS[6])
state.created = now
state.attempts = 0
state.lost = 0

local due = tonumber(ARGV[5])
if due == 0 and tonumber(ARGV[4]) > 0 then
  due = now + tonumber(ARGV[4])
end
redis.call('HSET', KEYS[1], id, ARGV[2])
redis.call('SADD', KEYS[8], ARGV[7])
if due > now then
  state.status = 'scheduled'
  state.due = due
  redis.call('HSET', KEYS[2], id, cjson.encode(state))
  redis.call('ZADD', KEYS[4], due, id)
  event('scheduled', 'delay_ms', due - now)
  return {1, now, due}
end

state.status = 'queued'
redis.call('HSET', KEYS[2], id, cjson.encode(state))
-- Lower scores pop first: higher priority first, then first in, first out.
-- |score| < 2^52, so every score is an exact double.
redis.call('ZADD', KEYS[3], string.format('%.0f', -state.priority * 2^40 + state.seq), id)
if redis.call('LLEN', KEYS[5]) < tonumber(ARGV[6]) then
  redis.call('LPUSH', KEYS[5], '1')
end
event('appended')
return {1, now, 0}
