-- (lib/tell.lua, put in place of "--#include tell" when the script is loaded)
-- Tell the producers waiting for a job of its end: `news` goes onto each one's
-- reply list (see wait.lua). `waiting` is the job's entry in `waiters`: the
-- producers' tokens, space-separated. A reply nobody takes (its producer gave
-- up) goes away on its own after a minute.
local REPLY_MS = 60000
local function tell(reply_prefix, waiting, news)
  for token in string.gmatch(waiting, '%S+') do
    redis.call('RPUSH', reply_prefix .. token, news)
    redis.call('PEXPIRE', reply_prefix .. token, REPLY_MS)
  end
end

-- tell, for one job that has just ended, looked up in `waiters` (and dropped from it).
local function tell_one(waiters, reply_prefix, id, news)
  local waiting = redis.call('HGET', waiters, id)
  if waiting then
    tell(reply_prefix, waiting, news)
    redis.call('HDEL', waiters, id)
  end
end
