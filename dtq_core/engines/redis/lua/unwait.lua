--[[ unwait: a producer stops waiting for a job (its wait timed out): drop its
token from the job's entry in `waiters`, and its reply list.

KEYS[1] waiters    hash    id -> tokens of the producers waiting for it, space-separated
KEYS[2] reply      list    this waiter's reply list
ARGV[1] id
ARGV[2] token

Returns 1 if the token was registered, 0 if not (the job ended meanwhile).
]]
redis.call('DEL', KEYS[2])
local waiting = redis.call('HGET', KEYS[1], ARGV[1])
if not waiting then return 0 end
local rest, found = {}, 0
for token in string.gmatch(waiting, '%S+') do
  if token == ARGV[2] then found = 1 else rest[#rest + 1] = token end
end
if #rest == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(rest, ' '))
end
return found
