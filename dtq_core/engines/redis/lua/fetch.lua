--[[ fetch: promote due delayed jobs, then take up to N queued jobs and lease
them to one worker, all in one step.

A job is never only in a worker's memory: it leaves the ready queue in the same
step that records its lease (one script: atomic; the batch's records are read
with one HMGET each and its leases written with one HSET and one ZADD), so a worker that dies at any instant leaves it
either queued or leased (and a lease expires). Delayed jobs stay in Redis until
due and are promoted here, atomically, by whichever worker comes first.

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON: {status, attempts, lost, priority, seq,
                      created, started, finished, due, worker, token, cancel,
                      progress, message, max_retries, retry_backoff_s, timeout_s,
                      returned (deliveries handed back unstarted, see release.lua)}
KEYS[3] events  stream  the namespace's lifecycle events
KEYS[4..]       fours of (ready zset, active zset, scheduled zset, signal list) of
                each plugin, in the order to take from; active: id -> lease
                deadline (ms, server clock); scheduled: id -> due time (ms);
                signal: wake-up hints (see below)
ARGV[1] count: most jobs to take
ARGV[2] lease_ms
ARGV[3] worker id: goes into the fencing token
ARGV[4] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[5..] the plugins' names, one per four KEYS, in the same order

A hint is pushed for each job queued (up to a cap) and popped by a blocked
worker's BLPOP. Hints and jobs drift apart: jobs taken by a fetch that no BLPOP
preceded (a busy worker's) leave theirs behind, which would wake idle workers
to fetch nothing, a round trip each; and a worker woken by one plugin's hint
may take another plugin's job, leaving a job with no hint, which a blocked
worker would find only when its wait times out (as it would a promoted delayed
job, which gets none). So after taking, each plugin of the call is left with at
most one hint per job still queued, and at least one while any is.

A record dtq could not have written is never run, never dropped and never
stops the step. An id with a payload but no state (or the reverse), a state
that is not a JSON object or holds what JSON cannot write back (NaN,
Infinity), or a status that no job in that set has, is set aside: moved to
its plugin's active set with an expired deadline (0) and returned with the
reason, for the worker to bury as dead (bury.lua); if the worker dies first,
lease recovery finds it there (release.lua). A valid record found in the
wrong set is put back where its status says; an id with neither payload nor
state (a stray entry, no job) is dropped. Scores too large to be a time
(above 2^53 ms, such as +inf) count as due.

Returns {next_due_in_ms, sizes, body, left}: the wait until the next delayed
job of these plugins is due (-1 if none), then six strings per id (id, payload,
state JSON, token, plugin, reason) put end to end in `body`, their lengths in
bytes in `sizes`, space-separated (-1 for none), then how many jobs of these
plugins are still queued (a worker whose queue ran dry may wait for the next
one). A job taken has reason ''; an id set aside has no payload and no state,
token '' and the reason. Two strings instead of six replies per job: redis-py
reads a reply element by element, in Python, which cost a worker more than
cutting two strings apart does.
]]
--#include digits
--#include events
local count = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = now + tonumber(ARGV[2])
local now_text, deadline_text = digits(now), digits(deadline)
local next_due = -1
local taken = 0
local aside = 0
-- No time dtq stores comes near 2^53 ms; a larger score is garbage.
local FAR = 9007199254740992
-- Ids set aside per call are bounded, so a queue full of garbage cannot make
-- one call long: the worker buries them and calls again.
local ASIDE_MAX = 100

-- A finite number of magnitude below 2^53, or nil: NaN or infinity would break a score.
local function num(value)
  local n = tonumber(value)
  if n and n == n and n > -FAR and n < FAR then return n end
  return nil
end

local function score(state)
  return digits(-(num(state.priority) or 0) * 2^40 + (num(state.seq) or 0))
end

local sizes, body = {}, {}
local function report(id, payload, state, token, plugin, reason)
  local n = #body
  body[n + 1], body[n + 2], body[n + 3] = id, payload or '', state or ''
  body[n + 4], body[n + 5], body[n + 6] = token, plugin, reason
  sizes[n + 1], sizes[n + 2], sizes[n + 3] = #id, payload and #payload or -1, state and #state or -1
  sizes[n + 4], sizes[n + 5], sizes[n + 6] = #token, #plugin, #reason
end

local function set_aside(id, active, plugin, reason)
  redis.call('ZADD', active, 0, id)
  report(id, nil, nil, '', plugin, reason)
  aside = aside + 1
end

-- The record's payload and decoded state; or nil and why it cannot be used
-- ('stray' when there is no record at all).
local cached = {}
local function read(id)
  local payload, raw
  if cached[id] then
    payload, raw = cached[id][1], cached[id][2]
    cached[id] = nil
  else
    payload = redis.call('HGET', KEYS[1], id)
    raw = redis.call('HGET', KEYS[2], id)
  end
  if not payload and not raw then return nil, nil, 'stray' end
  if not payload then return nil, nil, 'no payload (a state without a payload)' end
  if not raw then return nil, nil, 'no state (a payload without a state)' end
  local ok, state = pcall(cjson.decode, raw)
  if not ok or type(state) ~= 'table' then return nil, nil, 'the state is not a JSON object' end
  return payload, state, nil
end

local function misplaced(state, where)
  local status = state.status
  local shown = type(status) == 'string' and ("'" .. status:sub(1, 40) .. "'")
    or (status == nil and 'missing' or ('a JSON ' .. type(status)))
  return "the state's status is " .. shown .. ', which no job in ' .. where .. ' has'
end

-- Put a valid record found in the wrong set back where its status says; false if no set fits.
local function put_back(id, state, ready, active, scheduled)
  if state.status == 'queued' then
    redis.call('ZADD', ready, 'NX', score(state), id)
  elseif state.status == 'running' then
    -- An expired deadline, unless it holds a lease already: recovery requeues it.
    redis.call('ZADD', active, 'NX', 0, id)
  elseif state.status == 'scheduled' then
    redis.call('ZADD', scheduled, 'NX', num(state.due) or now, id)
  else
    return false
  end
  return true
end

-- The payload and state of an id just taken from `where`, when it holds a job
-- in `status`; otherwise nil, after dealing with it: a stray id (no record) is
-- dropped, a valid record in the wrong set is put back where its status says,
-- and garbage is set aside to be buried.
local function expect(id, status, where, ready, active, scheduled, plugin)
  local payload, state, why = read(id)
  if why == 'stray' then return nil end
  if why then
    set_aside(id, active, plugin, why)
    return nil
  end
  if state.status ~= status then
    if not put_back(id, state, ready, active, scheduled) then
      set_aside(id, active, plugin, misplaced(state, where))
    end
    return nil
  end
  return payload, state
end

local function promote_one(id, ready, active, scheduled, plugin)
  redis.call('ZREM', scheduled, id)
  local _, state = expect(id, 'scheduled', 'the scheduled set', ready, active, scheduled, plugin)
  if not state then return end
  state.status = 'queued'
  state.due = nil
  local ok, encoded = pcall(cjson.encode, state)
  if not ok then return set_aside(id, active, plugin, 'the state holds a number JSON cannot carry') end
  redis.call('HSET', KEYS[2], id, encoded)
  redis.call('ZADD', ready, score(state), id)
end

local function promote(ready, active, scheduled, plugin)
  -- Most fetches find no delayed job at all: one look instead of the three below.
  if redis.call('EXISTS', scheduled) == 0 then return end
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', scheduled, '(' .. FAR, '+inf', 'LIMIT', 0, 100)) do
    due[#due + 1] = id
  end
  for _, id in ipairs(due) do
    if aside >= ASIDE_MAX then break end
    promote_one(id, ready, active, scheduled, plugin)
  end
  local nxt = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  local due_at = num(nxt[2])
  if due_at then
    local wait = math.max(0, due_at - now)
    if next_due < 0 or wait < next_due then next_due = wait end
  end
end

-- The leases' writes, sent as one command each at the end (they touch no id read later).
local leased_states, leases_of = {}, {}

local function lease(id, ready, active, scheduled, plugin)
  local payload, state = expect(id, 'queued', 'the ready queue', ready, active, scheduled, plugin)
  if not state then return end
  if state.attempts ~= nil and not num(state.attempts) then
    return set_aside(id, active, plugin, "the state's attempts is not a number")
  end
  state.status = 'running'
  state.attempts = (num(state.attempts) or 0) + 1
  state.started = now
  state.worker = ARGV[3]
  state.progress = nil
  state.message = nil
  -- Fencing: a token unique per delivery of the id. The arrival number is new
  -- for each append and requeue (both start attempts at 0 again, and the same
  -- worker may lease the id again); within it, the attempt number and the count
  -- of deliveries handed back unstarted (release.lua) tell deliveries apart.
  -- As dtq_core.engine.delivery_token makes it.
  state.token = ARGV[3] .. '/' .. digits(num(state.seq) or 0) .. '/' .. digits(state.attempts)
  if num(state.returned) then state.token = state.token .. '.' .. digits(num(state.returned)) end
  local ok, encoded = pcall(cjson.encode, state)
  if not ok then return set_aside(id, active, plugin, 'the state holds a number JSON cannot carry') end
  leased_states[#leased_states + 1] = id
  leased_states[#leased_states + 1] = encoded
  leases_of[active] = leases_of[active] or {}
  local deadlines = leases_of[active]
  deadlines[#deadlines + 1] = deadline_text
  deadlines[#deadlines + 1] = id
  add_event(KEYS[3], tonumber(ARGV[4]), count == 1, 'type', 'started', 'time', now_text, 'job', id,
    'plugin', plugin, 'attempt', digits(state.attempts), 'worker', ARGV[3])
  report(id, payload, encoded, state.token, plugin, '')
  taken = taken + 1
end

-- Hints in step with the plugin's queue (see the top): at most one per job
-- left in `ready`, and one at least while any is. `emptied`: a pop found it
-- empty. Returns how many jobs are left.
local function tend_hints(ready, signal, emptied)
  local left = emptied and 0 or redis.call('ZCARD', ready)
  local hints = redis.call('LLEN', signal)
  if hints > left then
    if left == 0 then
      redis.call('DEL', signal)
    else
      redis.call('LTRIM', signal, 0, left - 1)
    end
  elseif hints == 0 and left > 0 then
    redis.call('LPUSH', signal, '1')
  end
  return left
end

for k = 4, #KEYS, 4 do
  promote(KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[5 + (k - 4) / 4])
end
local left = 0
for k = 4, #KEYS, 4 do
  local emptied = false
  -- Pop again after an id that was not taken, so that garbage in a queue
  -- cannot make it look empty while real jobs wait behind it.
  while taken < count and aside < ASIDE_MAX do
    local wanted = count - taken
    local popped = redis.call('ZPOPMIN', KEYS[k], wanted)
    emptied = #popped < 2 * wanted
    if #popped == 0 then break end
    local ids = {}
    for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
    -- One read of the batch's records instead of two per job.
    local payloads = redis.call('HMGET', KEYS[1], unpack(ids))
    local states = redis.call('HMGET', KEYS[2], unpack(ids))
    for j, id in ipairs(ids) do cached[id] = {payloads[j], states[j]} end
    for _, id in ipairs(ids) do
      lease(id, KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[5 + (k - 4) / 4])
    end
  end
  left = left + tend_hints(KEYS[k], KEYS[k + 3], emptied)
end
if #leased_states > 0 then redis.call('HSET', KEYS[2], unpack(leased_states)) end
for active, deadlines in pairs(leases_of) do redis.call('ZADD', active, unpack(deadlines)) end
trim_events(KEYS[3], tonumber(ARGV[4]))
return {next_due, table.concat(sizes, ' '), table.concat(body), left}
