--[[ wait: register the wait of a producer for a job's end if the job is still
live, or else read the job, in one atomic step (an end cannot fall between the
look and the registration).

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

Returns 1 when the job is live (the wait registered): the job's live record is
not sent, as the producer only waits on (it reads the job itself if its wait
runs out first). Otherwise what a read of a job no longer live returns:
{false, false, done record as a flat field-value array, errors, succeeded
record, its expiry}, each absent part nil.
]]
--#include tell
local id, token = ARGV[1], ARGV[2]
if redis.call('HEXISTS', KEYS[2], id) == 1 or redis.call('HEXISTS', KEYS[1], id) == 1 then
  local waiting = redis.call('HGET', KEYS[7], id)
  if not waiting then
    redis.call('HSET', KEYS[7], id, token)
  elseif not string.find(' ' .. waiting .. ' ', ' ' .. token .. ' ', 1, true) then
    redis.call('HSET', KEYS[7], id, waiting .. ' ' .. token)
  end
  return 1
end
redis.call('RPUSH', KEYS[8], '')
redis.call('PEXPIRE', KEYS[8], REPLY_MS)
return {false, false, redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[4], 0, -1),
  redis.call('HGET', KEYS[5], id), redis.call('ZSCORE', KEYS[6], id)}
