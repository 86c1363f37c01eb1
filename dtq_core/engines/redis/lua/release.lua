--[[ release: give a leased job back to its queue.

Three callers: recovery of an expired lease (its worker died or hung: no token,
the deadline must have passed, a lost lease is counted); a worker whose job
process died (token, lost lease counted); a worker that hands back a job it
has not finished (token, nothing counted), or one it never started (token: the
delivery is not counted as an attempt either, so a job handed back at every
shutdown keeps its retries). A job that has lost
too many leases (it keeps killing its workers) ends 'dead'; a job whose
cancellation was requested ends 'cancelled' instead of running again.

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON
KEYS[3] active  zset  the plugin's leases: id -> deadline
KEYS[4] ready   zset  the plugin's queue
KEYS[5] signal  list  wake-up hints
KEYS[6] done    hash  this id's final record
KEYS[7] errors  list  this id's attempt errors
KEYS[8] index   zset    ids of dead jobs -> finish time
KEYS[9] events  stream  the namespace's lifecycle events
KEYS[10] rate   hash    outcomes counted in the current minute (client's clock)
KEYS[11] scheduled zset  the plugin's delayed jobs
KEYS[12] waiters hash    id -> tokens of the producers waiting for it (see wait.lua)
ARGV[1] id
ARGV[2] token, or '' to release only if the lease has expired
ARGV[3] 1 to count a lost lease (and record ARGV[6] as an attempt error); 2 not
        started: take back the attempt the fetch counted (a token is needed); else 0
ARGV[4] max lost leases: the count at which the job goes dead
ARGV[5] retention in seconds of a final record
ARGV[6] error JSON recorded for a lost lease
ARGV[7] reply prefix: a waiter's reply list is this followed by its token
ARGV[8] signal cap
ARGV[9] dead index cap
ARGV[10] most errors kept per job
ARGV[11] error JSON recorded as the reason when the job goes dead
ARGV[12] plugin name
ARGV[13] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[14] lifetime in seconds of the minute's counts
ARGV[15], ARGV[16] the lost lease's error type and short message, for its event
ARGV[17], ARGV[18] the dead job's error type and short message, for its event

Recovery never drops a record. When the expired lease's record is unusable
(a payload without a state or the reverse, a state that is not a JSON object
or holds what JSON cannot write back, a status no leased job has), the id is
left in the active set and {4, reason} returned: the caller buries it as dead
(bury.lua). A valid queued or scheduled record is put back in its set; an id
with neither payload nor state (a stray entry, no job) is removed. A
deadline too large to be a time (above 2^53 ms, such as +inf) counts as
expired. With a token, a record that cannot be read is left alone (0) until
its lease expires and recovery deals with it.

Returns 1 requeued, 2 dead, 3 cancelled, 0 nothing to do (the lease was renewed
or belongs to someone else, or the job finished meanwhile), {4, reason} set
aside for burial.
]]
--#include tell
local id = ARGV[1]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local FAR = 9007199254740992
local payload = redis.call('HGET', KEYS[1], id)
local raw = redis.call('HGET', KEYS[2], id)
local ok, state = pcall(cjson.decode, raw or '')
local usable = payload and ok and type(state) == 'table'

-- A finite number of magnitude below 2^53, or nil: NaN or infinity would break a score.
local function num(value)
  local n = tonumber(value)
  if n and n == n and n > -FAR and n < FAR then return n end
  return nil
end

-- Why recovery cannot requeue the record, or nil. Valid queued or scheduled
-- records are put back in their set first.
local function unusable()
  if not payload then return 'no payload (a state without a payload)' end
  if not raw then return 'no state (a payload without a state)' end
  if not usable then return 'the state is not a JSON object' end
  if state.status == 'queued' then
    local score = -(num(state.priority) or 0) * 2^40 + (num(state.seq) or 0)
    redis.call('ZADD', KEYS[4], 'NX', string.format('%.0f', score), id)
  elseif state.status == 'scheduled' then
    redis.call('ZADD', KEYS[11], 'NX', num(state.due) or now, id)
  elseif state.status ~= 'running' then
    local shown = type(state.status) == 'string' and ("'" .. state.status:sub(1, 40) .. "'")
      or (state.status == nil and 'missing' or ('a JSON ' .. type(state.status)))
    return "the state's status is " .. shown .. ', which no leased job has'
  end
  return nil
end

if ARGV[2] == '' then
  local deadline = tonumber(redis.call('ZSCORE', KEYS[3], id))
  if not deadline or (deadline > now and deadline < FAR) then return 0 end
  if not payload and not raw then
    redis.call('ZREM', KEYS[3], id)
    return 0
  end
  local why = unusable()
  if why then return {4, why} end
elseif not usable or state.token ~= ARGV[2] then
  return 0
end
if state.status ~= 'running' then
  redis.call('ZREM', KEYS[3], id)
  return 0
end

local ttl = tonumber(ARGV[5])
local lost = num(state.lost) or 0
if ARGV[3] == '1' then lost = lost + 1 end
state.lost = lost
state.token = nil
if ARGV[3] == '2' and ARGV[2] ~= '' then
  -- Not an attempt after all. `returned` keeps the next delivery's token
  -- unlike this one's (fetch.lua), though their attempt numbers are the same.
  state.attempts = math.max(0, (num(state.attempts) or 1) - 1)
  state.returned = (num(state.returned) or 0) + 1
  if state.attempts == 0 then state.started = nil end
end
-- Checked before any write: a state JSON cannot write back is set aside whole.
if not pcall(cjson.encode, state) then
  if ARGV[2] == '' then return {4, 'the state holds a number JSON cannot carry'} end
  return 0
end
redis.call('ZREM', KEYS[3], id)

-- Record a lifecycle event unless events are off.
local function event(kind, ...)
  local cap = tonumber(ARGV[13])
  if cap <= 0 then return end
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', cap, '*', 'type', kind, 'time', now, 'job', id,
    'plugin', ARGV[12], 'attempt', num(state.attempts) or 0, 'worker', tostring(state.worker or ''), ...)
end

if ARGV[3] == '1' then
  redis.call('RPUSH', KEYS[7], ARGV[6])
  redis.call('LTRIM', KEYS[7], -tonumber(ARGV[10]), -1)
  redis.call('EXPIRE', KEYS[7], ttl)
  event('lease_lost', 'error_type', ARGV[15], 'error_message', ARGV[16])
end

local final = nil
if state.cancel then
  final = 'cancelled'
elseif lost >= tonumber(ARGV[4]) then
  final = 'dead'
end
if final then
  state.status = final
  state.finished = now
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HSET', KEYS[6], 'payload', payload, 'state', cjson.encode(state))
  if final == 'dead' then
    redis.call('HSET', KEYS[6], 'error', ARGV[11])
    redis.call('ZADD', KEYS[8], now, id)
    redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now - ttl * 1000)
    redis.call('ZREMRANGEBYRANK', KEYS[8], 0, -tonumber(ARGV[9]) - 1)
  end
  redis.call('EXPIRE', KEYS[6], ttl)
  redis.call('HINCRBY', KEYS[10], ARGV[12] .. '|' .. final, 1)
  redis.call('EXPIRE', KEYS[10], tonumber(ARGV[14]))
  if final == 'dead' then
    event('dead', 'error_type', ARGV[17], 'error_message', ARGV[18])
  else
    event('cancelled')
  end
  tell_one(KEYS[12], ARGV[7], id, id)
  return final == 'dead' and 2 or 3
end

state.status = 'queued'
redis.call('HSET', KEYS[2], id, cjson.encode(state))
local score = -(num(state.priority) or 0) * 2^40 + (num(state.seq) or 0)
redis.call('ZADD', KEYS[4], string.format('%.0f', score), id)
if redis.call('LLEN', KEYS[5]) < tonumber(ARGV[8]) then
  redis.call('LPUSH', KEYS[5], '1')
end
event('requeued')
return 1
