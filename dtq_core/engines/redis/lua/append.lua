--[[ append: create jobs of one plugin, each unless a job with its id exists.

Each job is created whole or not at all (a script runs atomically); a batch
costs a fixed number of commands plus one event per job (and a look for a
retained final record per job only when the batch has one), so a bulk append
needs few commands per job.

A call whose ids were all made for it (ARGV[4] '0') skips the look for
existing ids, three of a one-job call's twelve commands: an id of 128 random
bits that no server has been sent cannot be taken. A client sends such a call
at most once: one sent again, after its reply was lost, may have run, so it
looks (ARGV[4] '1'), and a repeat is answered 2 with nothing written.

KEYS[1] jobs       hash    id -> payload JSON {"data","plugin"} of every live job
KEYS[2] state      hash    id -> state JSON of every live job (see fetch.lua)
KEYS[3] ready      zset    the plugin's queue: id scored by priority, then arrival
KEYS[4] scheduled  zset    the plugin's delayed jobs: id -> due time (ms)
KEYS[5] signal     list    wake-up hints for workers blocked on this plugin
KEYS[6] seq        string  arrival counter of the namespace
KEYS[7] plugins    set     names of the plugins that have ever had a job (for stats)
KEYS[8] events     stream  the namespace's lifecycle events
KEYS[9] succeeded  hash    id -> final record JSON of a succeeded job (see complete.lua)
KEYS[10] expiry    zset    id -> when its `succeeded` record expires (ms)
KEYS[10 + i] done  hash    the i-th job's final record (failed, dead, cancelled), while retained
                           (one EXISTS looks for any of them: they are rare); only with ARGV[4] '1'
ARGV[1] signal cap: the signal list is kept at most this long
ARGV[2] plugin name
ARGV[3] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[4] '1' to look for the ids among existing jobs; '0' when each id is new (see above)
ARGV[5 + 6(i-1) ..] six per job i:
        id;
        payload: canonical JSON, compared byte for byte with an existing job's;
        priority: an integer from -4095 to 4095, as JSON;
        options: more members of the job's state, as JSON text that follows
          others (',"max_retries":3,"timeout_s":5.0'; '' for none): any of
          max_retries, retry_backoff_s, timeout_s, scalars;
        delay in ms from now (server clock), 0 for none;
        due time in ms since the epoch (an ETA), 0 for none; wins over the delay

Returns one code per job, in order, as the digits of one string ("1121": one
reply to read, not one per job): 1 created; 2 the id exists with the same
payload (a repeated append, also within the batch); 0 the id exists with a
different payload (a conflict). Nothing is written for codes 0 and 2.
]]
--#include digits
--#include events
local n = (#ARGV - 4) / 6
local plugin = ARGV[2]
local cap = tonumber(ARGV[3])
local look = ARGV[4] == '1'
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_text = digits(now)

local ids = {}
for i = 1, n do ids[i] = ARGV[5 + 6 * (i - 1)] end
local live, kept = {}, {}
if look then
  live = redis.call('HMGET', KEYS[1], unpack(ids))
  kept = redis.call('HMGET', KEYS[9], unpack(ids))
end

-- The payload of a succeeded job's record, unless it has expired (nil): an
-- expired record not swept yet is deleted, its id free again.
local function succeeded(i)
  local expires = tonumber(redis.call('ZSCORE', KEYS[10], ids[i]))
  local ok, record = pcall(cjson.decode, kept[i])
  if (expires and expires <= now) or not ok or type(record) ~= 'table' then
    redis.call('HDEL', KEYS[9], ids[i])
    redis.call('ZREM', KEYS[10], ids[i])
    return nil
  end
  return record.payload
end

-- Retained failed, dead or cancelled records are rare: one look for any of
-- them, instead of one per job.
local any_done = look and redis.call('EXISTS', unpack(KEYS, 11)) > 0

-- The payload an id already has (live, retained final, or earlier in this batch), or nil.
local seen = {}
local function existing(i)
  local id = ids[i]
  return seen[id] or live[i] or (kept[i] and succeeded(i))
    or (any_done and redis.call('HGET', KEYS[10 + i], 'payload'))
end

local codes = {}
local fresh = {}
for i = 1, n do
  local payload = ARGV[6 + 6 * (i - 1)]
  local found = existing(i)
  if found then
    codes[i] = found == payload and 2 or 0
  else
    codes[i] = 1
    seen[ids[i]] = payload
    fresh[#fresh + 1] = i
  end
end
if #fresh == 0 then return table.concat(codes) end

local last = redis.call('INCRBY', KEYS[6], #fresh)
local payloads, states, ready, scheduled = {}, {}, {}, {}
local queued = 0
local alone = #fresh == 1
for k, i in ipairs(fresh) do
  local base = 5 + 6 * (i - 1)
  local id = ids[i]
  local priority = ARGV[base + 2]
  local seq = last - #fresh + k
  local due = tonumber(ARGV[base + 5])
  if due == 0 and tonumber(ARGV[base + 4]) > 0 then
    due = now + tonumber(ARGV[base + 4])
  end
  -- The state is written as text: the same JSON object cjson would make of
  -- it, without decoding and encoding it again for every job.
  local state = '{"priority":' .. priority .. ',"seq":' .. digits(seq) ..
    ',"created":' .. now_text .. ',"attempts":0,"lost":0' .. ARGV[base + 3]
  local kind
  if due > now then
    state = state .. ',"status":"scheduled","due":' .. digits(due) .. '}'
    scheduled[#scheduled + 1] = digits(due)
    scheduled[#scheduled + 1] = id
    kind = 'scheduled'
  else
    state = state .. ',"status":"queued"}'
    -- Lower scores pop first: higher priority first, then first in, first out.
    -- |score| < 2^52, so every score is a whole number, written exactly.
    ready[#ready + 1] = digits(-tonumber(priority) * 2^40 + seq)
    ready[#ready + 1] = id
    queued = queued + 1
    kind = 'appended'
  end
  payloads[#payloads + 1] = id
  payloads[#payloads + 1] = ARGV[base + 1]
  states[#states + 1] = id
  states[#states + 1] = state
  -- The fields of dtq_core.Event (attempt 0 and no worker yet: left out).
  if kind == 'scheduled' then
    add_event(KEYS[8], cap, alone, 'type', kind, 'time', now_text, 'job', id, 'plugin', plugin,
      'delay_ms', digits(due - now))
  else
    add_event(KEYS[8], cap, alone, 'type', kind, 'time', now_text, 'job', id, 'plugin', plugin)
  end
end

redis.call('HSET', KEYS[1], unpack(payloads))
redis.call('HSET', KEYS[2], unpack(states))
redis.call('SADD', KEYS[7], plugin)
if #scheduled > 0 then redis.call('ZADD', KEYS[4], unpack(scheduled)) end
if queued > 0 then
  redis.call('ZADD', KEYS[3], unpack(ready))
  -- One hint per job queued, up to the cap: each can wake a blocked worker.
  local room = math.min(queued, tonumber(ARGV[1]) - redis.call('LLEN', KEYS[5]))
  if room > 0 then
    local hints = {}
    for h = 1, room do hints[h] = '1' end
    redis.call('LPUSH', KEYS[5], unpack(hints))
  end
end
trim_events(KEYS[8], cap)
return table.concat(codes)
