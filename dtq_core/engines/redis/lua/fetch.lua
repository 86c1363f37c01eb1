--[[ fetch: take up to N queued jobs and lease them to one worker, in one step.

A job is never only in a worker's memory: it leaves the ready queue in the same
step that records its lease, so a worker that dies at any instant leaves it
either queued or leased (and a lease expires).

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON: {status, attempts, lost, priority, seq,
                      created, started, token, worker}
KEYS[3..]       pairs of (ready zset, active zset) of each plugin, in the order
                to take from; active: id -> lease deadline (ms, server clock)
ARGV[1] count: most jobs to take
ARGV[2] lease_ms
ARGV[3] worker id: goes into the fencing token

Returns a flat array, four entries per job: id, payload, state JSON, token.
]]
local count = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local deadline = now + tonumber(ARGV[2])
local out = {}
local taken = 0

for k = 3, #KEYS, 2 do
  -- Pop again after dropping ids without a record, so that garbage in a queue
  -- cannot make it look empty while real jobs wait behind it.
  while taken < count do
    local popped = redis.call('ZPOPMIN', KEYS[k], count - taken)
    if #popped == 0 then break end
    for i = 1, #popped, 2 do
      local id = popped[i]
      local payload = redis.call('HGET', KEYS[1], id)
      local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
      if payload and ok and type(state) == 'table' then
        state.status = 'running'
        state.attempts = (tonumber(state.attempts) or 0) + 1
        state.started = now
        state.worker = ARGV[3]
        -- The attempt number makes the token unique per delivery: fencing.
        state.token = ARGV[3] .. '/' .. state.attempts
        local encoded = cjson.encode(state)
        redis.call('HSET', KEYS[2], id, encoded)
        redis.call('ZADD', KEYS[k + 1], deadline, id)
        out[#out + 1] = id
        out[#out + 1] = payload
        out[#out + 1] = encoded
        out[#out + 1] = state.token
        taken = taken + 1
      end
    end
  end
end
return out
