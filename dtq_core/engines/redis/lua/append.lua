--[[ append: create a queued job unless a job with its id already exists.

KEYS[1] jobs    hash    id -> payload JSON {"data","plugin"} of every live job
KEYS[2] state   hash    id -> state JSON of every live job (see fetch.lua)
KEYS[3] ready   zset    the plugin's queue: id scored by priority, then arrival
KEYS[4] signal  list    wake-up hints for workers blocked on this plugin
KEYS[5] seq     string  arrival counter of the namespace
KEYS[6] done    hash    this id's final record, while it is retained
ARGV[1] id
ARGV[2] payload: canonical JSON, compared byte for byte with an existing job's
ARGV[3] priority: integer in [-4095, 4095], higher runs first
ARGV[4] signal cap: the signal list is kept at most this long

Returns {1, created_ms} when the job was created;
        {0, 1} when the id exists with the same payload (a repeated append);
        {0, 0} when the id exists with a different payload (a conflict).
]]
local id = ARGV[1]
local existing = redis.call('HGET', KEYS[1], id)
if not existing then
  existing = redis.call('HGET', KEYS[6], 'payload')
end
if existing then
  return {0, existing == ARGV[2] and 1 or 0}
end

local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local priority = tonumber(ARGV[3])
local seq = redis.call('INCR', KEYS[5])
local state = {status = 'queued', attempts = 0, lost = 0, priority = priority,
               seq = seq, created = now}

redis.call('HSET', KEYS[1], id, ARGV[2])
redis.call('HSET', KEYS[2], id, cjson.encode(state))
-- Lower scores pop first: higher priority first, then first in, first out.
-- |score| < 2^52, so every score is an exact double.
redis.call('ZADD', KEYS[3], string.format('%.0f', -priority * 2^40 + seq), id)
if redis.call('LLEN', KEYS[4]) < tonumber(ARGV[4]) then
  redis.call('LPUSH', KEYS[4], '1')
end
return {1, now}
