--[[ complete: record the outcomes of attempts at jobs of one plugin, each only
if the caller still holds that job's lease (its fencing token).

A succeeded job's record (payload, state, result) becomes one field of the
namespace's `succeeded` hash, its expiry a score in `expiry`; expired ones are
swept here, a few per call, and by sweep.lua. Any other final outcome moves
the record into the job's own done hash, which expires after the retention
time. A retry puts the job back among the delayed jobs, due after the backoff.
A producer waiting on a job (an id in `waiters`, see wait.lua) is told on its
reply list: a succeeded job's record goes in the message (with earlier
attempts' errors, if any, as {record, errors}), so the producer need not read
it back; for other outcomes the message is the id.
Writes of the whole batch go out as one command each (HDEL, HSET, ZADD with
many arguments), so a batch costs a few commands plus one event per job.

Each id appears at most once per call (the client splits batches).

KEYS[1] jobs       hash    id -> payload JSON
KEYS[2] state      hash    id -> state JSON
KEYS[3] active     zset    the plugin's leases: id -> deadline
KEYS[4] scheduled  zset    the plugin's delayed jobs: id -> due time
KEYS[5] succeeded  hash    id -> final record JSON {payload, state, result} of a succeeded job
KEYS[6] expiry     zset    id -> when its `succeeded` record expires (ms)
KEYS[7] waiters    hash    id -> tokens of the producers waiting for the job, space-separated
KEYS[8] dead       zset    ids of dead jobs -> finish time
KEYS[9] failed     zset    ids of failed jobs -> finish time
KEYS[10] events    stream  the namespace's lifecycle events
KEYS[11] rate      hash    outcomes counted in the current minute (of the client's
                           clock): '<plugin>|<status>' -> count
KEYS[10 + 2i]      hash    completion i's done record: payload, state, result, error
KEYS[11 + 2i]      list    completion i's attempt errors (JSON), the newest last
ARGV[1] plugin name
ARGV[2] index cap: most ids kept in the dead and the failed index
ARGV[3] most errors kept per job
ARGV[4] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[5] lifetime in seconds of the minute's counts
ARGV[6] reply prefix: a waiter's reply list is this followed by its token (the
        namespace's hash tag is in it, so the list is in the same slot)
ARGV[7 + 9(i-1) ..] nine per completion i:
        id; token (the fencing token from fetch);
        outcome: 'succeeded', 'failed', 'dead', 'cancelled' or 'retry';
        result JSON or ''; error JSON or ''; retention in seconds of the final
        record (and of the errors); retry delay in ms (outcome 'retry');
        the event's error type or ''; the event's error message (short) or ''

Returns one code per completion: 1 recorded (also when this very attempt was
recorded already: a client retrying after a dropped connection); 2 recorded,
but a retry ended the job cancelled instead (its cancel was asked for during
the attempt), also when repeated; 0 when the lease is no longer the caller's
(it expired and the job went to another worker, or the job is gone) or the
record is malformed: then nothing is written for it.
]]
--#include tell
--#include sweep
--#include digits
--#include events
local n = (#ARGV - 6) / 9
local plugin = ARGV[1]
local index_cap = tonumber(ARGV[2])
local cap = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_text = digits(now)

local ids = {}
for i = 1, n do ids[i] = ARGV[7 + 9 * (i - 1)] end
local states = redis.call('HMGET', KEYS[2], unpack(ids))
local payloads = redis.call('HMGET', KEYS[1], unpack(ids))
local waiting = redis.call('HMGET', KEYS[7], unpack(ids))

-- Writes gathered for the batch, sent as one command each at the end.
local unleased, finished, rescheduled, succeeded, expiring, told = {}, {}, {}, {}, {}, {}
local counts = {}
local indexes = {dead = KEYS[8], failed = KEYS[9]}
local indexed = {}

-- The state of a record already final (this attempt's own completion repeated?), or nil.
local function final_state(i)
  local record = redis.call('HGET', KEYS[5], ids[i])
  local raw
  if record then
    local ok, decoded = pcall(cjson.decode, record)
    raw = ok and type(decoded) == 'table' and decoded.state
  else
    raw = redis.call('HGET', KEYS[10 + 2 * i], 'state')
  end
  local ok, final = pcall(cjson.decode, raw or '')
  return ok and type(final) == 'table' and final or nil
end

-- The code of a completion: 2 when the retry asked for (ARGV[a + 2]) ended the job cancelled.
local function stored(a, status)
  return (ARGV[a + 2] == 'retry' and status == 'cancelled') and 2 or 1
end

local function event(kind, id, state, a, ...)
  counts[kind] = (counts[kind] or 0) + 1
  local attempt, worker = digits(tonumber(state.attempts) or 0), state.worker or ''
  if ARGV[a + 7] == '' and ARGV[a + 8] == '' then  -- no error: no error fields
    add_event(KEYS[10], cap, n == 1, 'type', kind, 'time', now_text, 'job', id, 'plugin', plugin,
      'attempt', attempt, 'worker', worker, ...)
  else
    add_event(KEYS[10], cap, n == 1, 'type', kind, 'time', now_text, 'job', id, 'plugin', plugin,
      'attempt', attempt, 'worker', worker, 'error_type', ARGV[a + 7], 'error_message', ARGV[a + 8], ...)
  end
end

-- The state as the outcome leaves it, encoded; nil if cjson cannot write it
-- (a NaN or infinity something else put there: cjson reads them). Made before
-- any write of the completion, which is then refused whole.
local function ended(state, a, outcome)
  if outcome == 'retry' then
    state.status = 'scheduled'
    state.due = now + tonumber(ARGV[a + 6])
  else
    state.status = outcome
    state.finished = now
  end
  local ok, encoded = pcall(cjson.encode, state)
  return ok and encoded or nil
end

local function retry(i, state, a, encoded)
  rescheduled[#rescheduled + 1] = ids[i]
  rescheduled[#rescheduled + 1] = encoded
  redis.call('ZADD', KEYS[4], digits(state.due), ids[i])
  event('retrying', ids[i], state, a, 'delay_ms', digits(tonumber(ARGV[a + 6])))
end

local function finish(i, state, a, encoded, outcome)
  local id, ttl = ids[i], tonumber(ARGV[a + 5])
  finished[#finished + 1] = id
  if outcome == 'succeeded' then
    local record = cjson.encode({payload = payloads[i], state = encoded,
      result = ARGV[a + 3] ~= '' and ARGV[a + 3] or nil})
    succeeded[#succeeded + 1] = id
    succeeded[#succeeded + 1] = record
    if waiting[i] then
      -- The waiter gets the record itself (and earlier attempts' errors), not just the id.
      local errors = redis.call('LRANGE', KEYS[11 + 2 * i], 0, -1)
      told[#told + 1] = {id, #errors == 0 and record or cjson.encode({record = record, errors = errors}), i}
    end
    expiring[#expiring + 1] = digits(now + ttl * 1000)
    expiring[#expiring + 1] = id
  else
    local done = KEYS[10 + 2 * i]
    redis.call('HSET', done, 'payload', payloads[i], 'state', encoded)
    if ARGV[a + 3] ~= '' then redis.call('HSET', done, 'result', ARGV[a + 3]) end
    if ARGV[a + 4] ~= '' then redis.call('HSET', done, 'error', ARGV[a + 4]) end
    redis.call('EXPIRE', done, ttl)
    if indexes[outcome] and index_cap > 0 then
      redis.call('ZADD', indexes[outcome], now_text, id)
      indexed[outcome] = math.max(indexed[outcome] or 0, ttl)
    end
  end
  if waiting[i] and outcome ~= 'succeeded' then told[#told + 1] = {id, id, i} end
  event(outcome, id, state, a)
end

local codes = {}
for i = 1, n do
  local a = 7 + 9 * (i - 1)
  local ok, state = pcall(cjson.decode, states[i] or '')
  if not ok or type(state) ~= 'table' then
    local final = final_state(i)
    codes[i] = (final and final.token == ARGV[a + 1]) and stored(a, final.status) or 0
  elseif state.token ~= ARGV[a + 1] then
    codes[i] = 0
  elseif state.status ~= 'running' then
    codes[i] = 1
  -- A live job without a payload, or a state JSON cannot write back (NaN or
  -- Infinity, put there by something else), is refused before any write:
  -- lease recovery buries the job (release.lua, bury.lua).
  elseif not payloads[i] then
    codes[i] = 0
  else
    -- A retry of a job whose cancellation was asked for during the attempt (its
    -- worker not told yet) is no retry: the job ends cancelled, as the caller asked.
    local outcome = ARGV[a + 2]
    if outcome == 'retry' and state.cancel then outcome = 'cancelled' end
    local encoded = ended(state, a, outcome)
    codes[i] = encoded and stored(a, outcome) or 0
    if encoded then
      unleased[#unleased + 1] = ids[i]
      if ARGV[a + 4] ~= '' then
        local errors = KEYS[11 + 2 * i]
        redis.call('RPUSH', errors, ARGV[a + 4])
        redis.call('LTRIM', errors, -tonumber(ARGV[3]), -1)
        redis.call('EXPIRE', errors, tonumber(ARGV[a + 5]))
      end
      if outcome == 'retry' then retry(i, state, a, encoded) else finish(i, state, a, encoded, outcome) end
    end
  end
end

if #unleased > 0 then redis.call('ZREM', KEYS[3], unpack(unleased)) end
if #finished > 0 then
  redis.call('HDEL', KEYS[1], unpack(finished))
  redis.call('HDEL', KEYS[2], unpack(finished))
end
if #rescheduled > 0 then redis.call('HSET', KEYS[2], unpack(rescheduled)) end
if #succeeded > 0 then
  redis.call('HSET', KEYS[5], unpack(succeeded))
  redis.call('ZADD', KEYS[6], unpack(expiring))
end
for outcome, ttl in pairs(indexed) do
  redis.call('ZREMRANGEBYSCORE', indexes[outcome], '-inf', now - ttl * 1000)
  redis.call('ZREMRANGEBYRANK', indexes[outcome], 0, -index_cap - 1)
end
for kind, count in pairs(counts) do
  redis.call('HINCRBY', KEYS[11], plugin .. '|' .. kind, count)
end
if next(counts) then redis.call('EXPIRE', KEYS[11], tonumber(ARGV[5])) end
if #told > 0 then
  local ids_told = {}
  for k, news in ipairs(told) do
    tell(ARGV[6], waiting[news[3]], news[2])
    ids_told[k] = news[1]
  end
  redis.call('HDEL', KEYS[7], unpack(ids_told))
end

-- Sweep as many expired succeeded records as this call finished jobs, and a
-- few more: the store cleans itself at the rate it fills.
sweep(KEYS[5], KEYS[6], now, #finished + 16)
trim_events(KEYS[10], cap)
return codes
