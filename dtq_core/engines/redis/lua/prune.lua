--[[ prune: drop the entries of a dead or failed index that no longer stand for a
job of that status; with purge, delete the records of those that do.

An entry can outlive its job's record: the record expires after its retention,
and the entry waits for the next job of its status to prune it (complete.lua),
which may never come. It can also name an id that a later job took again and
ended otherwise, after the first record expired. Such entries made the dead and
failed counts too high, and a purge of one status deleted a record of another.
The caller reads the ids (the oldest first), this script checks each record.

KEYS[1]     index   zset  ids of final jobs of the status, scored by when they ended
KEYS[1 + i] done    hash  the final record of ARGV[2 + i]
KEYS[1 + n + i] errors list the attempt errors of ARGV[2 + i] (deleted with a purged record)
ARGV[1] the status: 'dead' or 'failed'
ARGV[2] '1' to purge: delete the records of this status and drop their entries too;
        '2' to purge records found outside the index (past its cap, by a scan of the
        keys): only those whose state says this status are deleted
ARGV[2 + i] the i-th id, i = 1..n

Returns {dropped, deleted}: entries dropped from the index (all, with purge;
without, those before the first entry that stands), and records deleted.
]]
local status = ARGV[1]
local purging = ARGV[2] == '1' or ARGV[2] == '2'
local listed = ARGV[2] ~= '2'
local n = #ARGV - 2
local dropped, deleted = 0, 0
for i = 1, n do
  local id = ARGV[2 + i]
  local raw = redis.call('HGET', KEYS[1 + i], 'state')
  local ok, state = pcall(cjson.decode, raw or '')
  local readable = ok and type(state) == 'table'
  -- Gone, or a record of another status (its id taken again): never deleted here. A
  -- record that cannot be read is taken for this status's when the index says so.
  local other = not raw or (readable and state.status ~= status) or (not readable and not listed)
  if purging and not other then
    redis.call('DEL', KEYS[1 + i], KEYS[1 + n + i])
    deleted = deleted + 1
  end
  if purging or other then
    dropped = dropped + redis.call('ZREM', KEYS[1], id)
  elseif not purging then
    -- Pruning stops at the first entry that stands: the ids come oldest first, and the
    -- newer ones' records expire later. A stats read then decodes one record per index.
    break
  end
end
return {dropped, deleted}
