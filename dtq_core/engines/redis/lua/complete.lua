--[[ complete: record a job's outcome, only if the caller still holds its lease.

The live record (payload and state) moves into the job's own done hash, which
expires after the retention time, and subscribers waiting on the job are told.

KEYS[1] jobs    hash  id -> payload JSON
KEYS[2] state   hash  id -> state JSON
KEYS[3] active  zset  the plugin's leases: id -> deadline
KEYS[4] done    hash  this id's final record: payload, state, result, error
ARGV[1] id
ARGV[2] token: the fencing token the worker got from fetch
ARGV[3] status: 'succeeded' or 'failed'
ARGV[4] result JSON, or '' for none
ARGV[5] error JSON, or '' for none
ARGV[6] retention in seconds
ARGV[7] channel published to with the id once the job is final

Returns 1 when recorded (also when this very outcome was already recorded: a
client retrying after a dropped connection); 0 when the lease is no longer the
caller's (it expired and the job went to another worker, or the job is gone):
then nothing is written.
]]
local id = ARGV[1]
local ok, state = pcall(cjson.decode, redis.call('HGET', KEYS[2], id) or '')
if not ok or type(state) ~= 'table' then
  local fok, final = pcall(cjson.decode, redis.call('HGET', KEYS[4], 'state') or '')
  if fok and type(final) == 'table' and final.token == ARGV[2] then
    return 1
  end
  return 0
end
if state.status ~= 'running' or state.token ~= ARGV[2] then
  return 0
end

local t = redis.call('TIME')
state.status = ARGV[3]
state.finished = t[1] * 1000 + math.floor(t[2] / 1000)

local payload = redis.call('HGET', KEYS[1], id)
redis.call('HDEL', KEYS[1], id)
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
redis.call('HSET', KEYS[4], 'payload', payload, 'state', cjson.encode(state))
if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'result', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[4], 'error', ARGV[5]) end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
redis.call('PUBLISH', ARGV[7], id)
return 1
