#!lua
-- Step 1 of a replay (registry/wire/deadletter.py): re-publish dead letters' original entries to
-- the events stream, each once. Step 2 deletes the dead letters, in the dead stream's slot (another
-- call); the marker makes a replay retried after a crash in between skip the re-publication.
-- KEYS[1] events stream, KEYS[2] replayed hash (dead-letter id -> re-published id), both in one slot.
-- ARGV per entry: the dead-letter entry id, n, and the n values (field, value, ...) to publish.
-- Returns per entry: the published id, then 1 when this call published it, 0 when an earlier one had.
local unpack = unpack or table.unpack
local out = {}
local i = 1
while i <= #ARGV do
  local dead, n = ARGV[i], tonumber(ARGV[i + 1])
  local done = redis.call('HGET', KEYS[2], dead)
  if done then
    out[#out + 1] = done
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    redis.call('HSET', KEYS[2], dead, id)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
  i = i + 2 + n
end
return out
