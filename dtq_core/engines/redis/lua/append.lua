--[[ append: create jobs of one plugin, each unless a job with its id exists.

Each job is created whole or not at all (a script runs atomically); a batch
costs a fixed number of commands plus one event entry per 100 jobs of a kind
(and a look for a retained final record per job only when the batch has one),
so a bulk append needs few commands per job.

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
ARGV[3] events cap: the stream keeps about this many entries (MAXLEN ~); 0 records none
ARGV[4] '1' to look for the ids among existing jobs; '0' when each id is new and
        named once in the call (see above)
ARGV[5] m: how many settings follow, each shared by the jobs that name it (a bulk
        append's jobs mostly share one: what is the same for all is sent and worked
        out once, not once per job)
ARGV[6 + 4(s-1) ..] four per setting s:
        priority: an integer from -4095 to 4095, as JSON;
        options: more members of the job's state, as JSON text that follows
          others (',"max_retries":3,"timeout_s":5.0'; '' for none): any of
          max_retries, retry_backoff_s, timeout_s, scalars;
        delay in ms from now (server clock), 0 for none;
        due time in ms since the epoch (an ETA), 0 for none; wins over the delay
ARGV[6 + 4m ..] per job i: its id; its payload (canonical JSON, compared byte for
        byte with an existing job's); and, only when m > 1, its setting's number s

Returns one code per job, in order, as the digits of one string ("1121": one
reply to read, not one per job): 1 created; 2 the id exists with the same
payload (a repeated append, also within the batch); 0 the id exists with a
different payload (a conflict). Nothing is written for codes 0 and 2.
]]
--#include digits
--#include events
local plugin = ARGV[2]
local cap = tonumber(ARGV[3])
local look = ARGV[4] == '1'
local m = tonumber(ARGV[5])
local first = 6 + 4 * m
local stride = m > 1 and 3 or 2
local n = (#ARGV - first + 1) / stride
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local now_text = digits(now)

-- Each setting's part of a job's state, written once: the state is written as
-- text, the same JSON object cjson would make of it, without decoding and
-- encoding it again for every job. Lower ready scores pop first: higher
-- priority first, then first in, first out (|score| < 2^52, so every score is a
-- whole number, written exactly); `shift` is the priority's part of it.
local settings = {}
for s = 1, m do
  local at = 6 + 4 * (s - 1)
  local priority, delay, due = ARGV[at], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  if due == 0 and delay > 0 then due = now + delay end
  local tail = ',"created":' .. now_text .. ',"attempts":0,"lost":0' .. ARGV[at + 1]
  local setting = {head = '{"priority":' .. priority .. ',"seq":', shift = -tonumber(priority) * 2^40}
  if due > now then
    setting.later, setting.due, setting.delay = true, digits(due), digits(due - now)
    setting.ids = {}  -- the ids scheduled with it now, for their events
    setting.tail = tail .. ',"status":"scheduled","due":' .. setting.due .. '}'
  else
    setting.tail = tail .. ',"status":"queued"}'
  end
  settings[s] = setting
end

local codes, fresh
if look then
  local ids = {}
  for i = 1, n do ids[i] = ARGV[first + stride * (i - 1)] end
  local live = redis.call('HMGET', KEYS[1], unpack(ids))
  local kept = redis.call('HMGET', KEYS[9], unpack(ids))

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
  local any_done = redis.call('EXISTS', unpack(KEYS, 11)) > 0

  -- The payload an id already has (live, retained final, or earlier in this batch), or nil.
  local seen = {}
  local function existing(i)
    local id = ids[i]
    return seen[id] or live[i] or (kept[i] and succeeded(i))
      or (any_done and redis.call('HGET', KEYS[10 + i], 'payload'))
  end

  codes, fresh = {}, {}
  for i = 1, n do
    local payload = ARGV[first + stride * (i - 1) + 1]
    local found = existing(i)
    if found then
      codes[i] = found == payload and 2 or 0
    else
      codes[i] = 1
      seen[ids[i]] = payload
      fresh[#fresh + 1] = i
    end
  end
  codes = table.concat(codes)
  if #fresh == 0 then return codes end
else
  -- Every id is new: every job is created, with no look and no list of them.
  codes = string.rep('1', n)
end
local created = fresh and #fresh or n

local last = redis.call('INCRBY', KEYS[6], created)
-- The per-job loop is most of the script's work: tables filled by counters (#t
-- is a search), and each job's arguments read where they lie.
local payloads, states, ready, scheduled = {}, {}, {}, {}
local queued = {}  -- the ids queued now, in order, for their events
local np, nr, ns = 0, 0, 0
local single = m == 1 and settings[1]
for k = 1, created do
  local i = fresh and fresh[k] or k
  local at = first + stride * (i - 1)
  local id = ARGV[at]
  local s = single or settings[tonumber(ARGV[at + 2])]
  local number = last - created + k
  local seq = digits(number)
  payloads[np + 1], payloads[np + 2] = id, ARGV[at + 1]
  states[np + 1], states[np + 2] = id, s.head .. seq .. s.tail
  np = np + 2
  if s.later then
    scheduled[ns + 1], scheduled[ns + 2] = s.due, id
    ns = ns + 2
    s.ids[#s.ids + 1] = id
  else
    ready[nr + 1], ready[nr + 2] = s.shift == 0 and seq or digits(s.shift + number), id
    nr = nr + 2
    queued[nr / 2] = id
  end
end

-- The events: a job alone is an entry of its own ('job'); several of one kind
-- share entries ('jobs', their ids joined by newlines, which no id holds), up
-- to EVENTS_PER_ENTRY each, in the order the jobs came: the queued jobs'
-- entries first, then the scheduled ones' by setting. An entry per job cost
-- more than the rest of a bulk append's work together (callgrind: 13,000 of
-- 36,000 instructions per job). The fields of dtq_core.Event (attempt 0 and no
-- worker yet: left out).
local EVENTS_PER_ENTRY = 100
local function tell(kind, ids, ...)
  if cap <= 0 then return end
  local count = #ids
  if count == 1 then
    add_event(KEYS[8], cap, created == 1, 'type', kind, 'time', now_text, 'job', ids[1], 'plugin', plugin, ...)
    return
  end
  for from = 1, count, EVENTS_PER_ENTRY do
    local jobs = table.concat(ids, '\n', from, math.min(count, from + EVENTS_PER_ENTRY - 1))
    -- 'job' too, the first: a reader from before shared entries sees that one, and does not fail.
    add_event(KEYS[8], cap, false, 'type', kind, 'time', now_text, 'job', ids[from], 'jobs', jobs,
      'plugin', plugin, ...)
  end
end
if nr > 0 then tell('appended', queued) end
for _, s in ipairs(settings) do
  if s.later and #s.ids > 0 then tell('scheduled', s.ids, 'delay_ms', s.delay) end
end

redis.call('HSET', KEYS[1], unpack(payloads))
redis.call('HSET', KEYS[2], unpack(states))
redis.call('SADD', KEYS[7], plugin)
if ns > 0 then redis.call('ZADD', KEYS[4], unpack(scheduled)) end
if nr > 0 then
  redis.call('ZADD', KEYS[3], unpack(ready))
  -- One hint per job queued, up to the cap: each can wake a blocked worker.
  local room = math.min(nr / 2, tonumber(ARGV[1]) - redis.call('LLEN', KEYS[5]))
  if room > 0 then
    local hints = {}
    for h = 1, room do hints[h] = '1' end
    redis.call('LPUSH', KEYS[5], unpack(hints))
  end
end
trim_events(KEYS[8], cap)
return codes
