--[[ fetch: promote due delayed jobs, then take up to N queued jobs and lease
them to one worker, all in one step.

A job is never only in a worker's memory: it leaves the ready queue in the same
step that records its lease, so a worker that dies at any instant leaves it
either queued or leased (and a lease expires). Delayed jobs stay in Redis until
due and are promoted here, atomically, by whichever worker comes first.

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON: {status, attempts, lost, priority, seq,
                      created, started, finished, due, worker, token, cancel,
                      progress, message, max_retries, retry_backoff_s, timeout_s}
KEYS[3] events  stream  the namespace's lifecycle events
KEYS[4..]       triples of (ready zset, active zset, scheduled zset) of each
                plugin, in the order to take from; active: id -> lease deadline
                (ms, server clock); scheduled: id -> due time (ms)
ARGV[1] count: most jobs to take
ARGV[2] lease_ms
ARGV[3] worker id: goes into the fencing token
ARGV[4] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none
ARGV[5..] the plugins' names, one per triple of KEYS, in the same order

Returns {next_due_in_ms, id, payload, state JSON, token, id, ...}: the wait until
the next delayed job of these plugins is due (-1 if none), then four entries
per job taken.
]]
local count = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = now + tonumber(ARGV[2])
local out = {-1}
local taken = 0

local function promote(ready, scheduled)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 500)
  for _, id in ipairs(due) do
    redis.call('ZREM', scheduled, id)
    local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
    if ok and type(state) == 'table' and state.status == 'scheduled' then
      state.status = 'queued'
      state.due = nil
      redis.call('HSET', KEYS[2], id, cjson.encode(state))
      local score = -(tonumber(state.priority) or 0) * 2^40 + (tonumber(state.seq) or 0)
      redis.call('ZADD', ready, string.format('%.0f', score), id)
    end
  end
  local nxt = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
  if nxt[2] then
    local wait = tonumber(nxt[2]) - now
    if out[1] < 0 or wait < out[1] then out[1] = wait end
  end
end

local function lease(id, active, plugin)
  local payload = redis.call('HGET', KEYS[1], id)
  local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
  -- An id without a record (written by something other than dtq) is dropped.
  if not (payload and ok and type(state) == 'table') then return end
  state.status = 'running'
  state.attempts = (tonumber(state.attempts) or 0) + 1
  state.started = now
  state.worker = ARGV[3]
  state.progress = nil
  state.message = nil
  -- The attempt number makes the token unique per delivery: fencing.
  state.token = ARGV[3] .. '/' .. state.attempts
  local encoded = cjson.encode(state)
  redis.call('HSET', KEYS[2], id, encoded)
  redis.call('ZADD', active, deadline, id)
  local cap = tonumber(ARGV[4])
  if cap > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', cap, '*', 'type', 'started', 'time', now, 'job', id,
      'plugin', plugin, 'attempt', state.attempts, 'worker', ARGV[3])
  end
  out[#out + 1] = id
  out[#out + 1] = payload
  out[#out + 1] = encoded
  out[#out + 1] = state.token
  taken = taken + 1
end

for k = 4, #KEYS, 3 do
  promote(KEYS[k], KEYS[k + 2])
end
for k = 4, #KEYS, 3 do
  -- Pop again after dropping ids without a record, so that garbage in a queue
  -- cannot make it look empty while real jobs wait behind it.
  while taken < count do
    local popped = redis.call('ZPOPMIN', KEYS[k], count - taken)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      lease(popped[i], KEYS[k + 1], ARGV[5 + (k - 4) / 3])
    end
  end
end
return out
