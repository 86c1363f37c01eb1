-- (lib/digits.lua, put in place of "--#include digits" when the script is loaded)
-- A whole number as its decimal digits, for a command's argument or a JSON
-- text. Given a Lua number, Redis and cjson write it with snprintf's "%.17g"
-- or "%.14g", whose float formatting cost more server work than anything
-- else a job does (over a fifth of a processed job's instructions, counted with
-- callgrind); "%d" writes an integer for about three quarters of that.
-- Lua's "%d" goes through a C long: where that has 32 bits (a 32-bit build)
-- a time in ms would overflow, so there every number comes back as it was.
-- So does anything but a whole number below 2^53 in magnitude.
local digits_exact = string.format('%d', 2^40) == '1099511627776'

local function digits(n)
  if digits_exact and type(n) == 'number' and n == math.floor(n)
      and n > -9007199254740992 and n < 9007199254740992 then
    return string.format('%d', n)
  end
  return n
end
