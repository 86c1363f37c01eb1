-- (lib/events.lua, put in place of "--#include events" when the script is loaded)
-- Lifecycle events onto the namespace's stream, capped at about `cap` entries
-- (0 records none). XADD's MAXLEN costs about a fifth of the XADD: a call
-- that may add several events adds them untrimmed and trims once at its end
-- (trim_events); one that adds a single event trims in it (`alone`).
-- A field an event has no value for may be left out (the reader takes attempt
-- 0, no worker, no error): appends and successes, the bulk of the events, do
-- so; each field costs the server work and memory. Needs lib/digits.
local events_untrimmed = 0

local function add_event(stream, cap, alone, ...)
  if cap <= 0 then return end
  if alone then
    redis.call('XADD', stream, 'MAXLEN', '~', digits(cap), '*', ...)
  else
    redis.call('XADD', stream, '*', ...)
    events_untrimmed = events_untrimmed + 1
  end
end

local function trim_events(stream, cap)
  if events_untrimmed > 0 then redis.call('XTRIM', stream, 'MAXLEN', '~', digits(cap)) end
end
