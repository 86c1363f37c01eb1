--[[ requeue: bring a final job (dead, failed or cancelled) back to its queue
for a fresh set of attempts, with its data, priority and options unchanged.

KEYS[1] jobs    hash    id -> payload JSON
KEYS[2] state   hash    id -> state JSON
KEYS[3] ready   zset    the plugin's queue
KEYS[4] signal  list    wake-up hints
KEYS[5] seq     string  arrival counter
KEYS[6] done    hash    this id's final record
KEYS[7] index   zset    the index the job is listed in (dead or failed)
KEYS[8] events  stream  the namespace's lifecycle events
ARGV[1] id
ARGV[2] signal cap
ARGV[3] plugin name
ARGV[4] events cap: the stream keeps about this many events (MAXLEN ~); 0 records none

Returns 1 requeued, 0 no final record (expired, or already requeued).
]]
local id = ARGV[1]
redis.call('ZREM', KEYS[7], id)
local payload = redis.call('HGET', KEYS[6], 'payload')
local ok, old = pcall(cjson.decode, redis.call('HGET', KEYS[6], 'state') or '')
if not payload or not ok or type(old) ~= 'table' then
  return 0
end
local state = {
  status = 'queued', attempts = 0, lost = 0, created = old.created,
  priority = tonumber(old.priority) or 0, seq = redis.call('INCR', KEYS[5]),
  max_retries = old.max_retries, retry_backoff_s = old.retry_backoff_s, timeout_s = old.timeout_s,
}
redis.call('DEL', KEYS[6])
redis.call('HSET', KEYS[1], id, payload)
redis.call('HSET', KEYS[2], id, cjson.encode(state))
redis.call('ZADD', KEYS[3], string.format('%.0f', -state.priority * 2^40 + state.seq), id)
if redis.call('LLEN', KEYS[4]) < tonumber(ARGV[2]) then
  redis.call('LPUSH', KEYS[4], '1')
end
local cap = tonumber(ARGV[4])
if cap > 0 then
  local t = redis.call('TIME')
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', cap, '*', 'type', 'requeued',
    'time', t[1] * 1000 + math.floor(t[2] / 1000), 'job', id, 'plugin', ARGV[3], 'attempt', 0, 'worker', '')
end
return 1
