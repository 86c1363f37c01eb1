--[[ wait: read one job for a producer that waits for its end, and register
the wait if the job is still live, in one atomic step (an end cannot fall
between the read and the registration).

A live job's id gets the waiter's token in `waiters`; the script that ends the
job (complete, release, cancel, bury) pushes the news onto the waiter's reply
list and drops the id from `waiters`. The producer blocks on that list (BLPOP)
in the same round trip as this call. When the job is final already, or
unknown, nothing is registered and an empty marker is pushed instead, so that
BLPOP returns at once.

KEYS[1] jobs       hash    id -> payload JSON of every live job
KEYS[2] state      hash    id -> state JSON of every live job
KEYS[3] done       hash    this id's final record (failed, dead, cancelled)
KEYS[4] errors     list    this id's attempt errors
KEYS[5] succeeded  hash    id -> final record JSON of a succeeded job
KEYS[6] expiry     zset    id -> when its `succeeded` record expires (ms)
KEYS[7] waiters    hash    id -> tokens of the producers waiting for it, space-separated
KEYS[8] reply      list    this waiter's reply list
ARGV[1] id
ARGV[2] token: this waiter's, unique per wait (no spaces)

Returns what a read of the job returns: {payload, state, done record as a flat
field-value array, errors, succeeded record, its expiry}, each absent part nil.
]]
--#include tell
local id, token = ARGV[1], ARGV[2]
local payload = redis.call('HGET', KEYS[1], id)
local state = redis.call('HGET', KEYS[2], id)
local read = {payload, state, redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[4], 0, -1),
  redis.call('HGET', KEYS[5], id), redis.call('ZSCORE', KEYS[6], id)}

if payload or state then
  local waiting = redis.call('HGET', KEYS[7], id)
  if not waiting then
    redis.call('HSET', KEYS[7], id, token)
  elseif not string.find(' ' .. waiting .. ' ', ' ' .. token .. ' ', 1, true) then
    redis.call('HSET', KEYS[7], id, waiting .. ' ' .. token)
  end
else
  redis.call('RPUSH', KEYS[8], '')
  redis.call('PEXPIRE', KEYS[8], REPLY_MS)
end
return read
