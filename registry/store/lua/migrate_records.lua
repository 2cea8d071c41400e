#!lua
-- Layout 5 -> 6, the write half of one bounded step of `jobreg migrate` (registry/store/migrate.py):
-- store the records' states re-encoded in the compact codec (registry/store/record.py), each only if
-- its version is still the one the states were read at, and move the cursor, in one atomic call.
--
-- Safe beside running workers: a record written since it was read (its version moved) keeps what
-- that write stored, which any version of the codec decodes; the version itself is left alone, as
-- the state it guards is the same, re-encoded (so a worker's compare-and-set is not disturbed).
--
-- KEYS[1] the migration's progress hash, KEYS[2 ..] job records.
-- ARGV[1] the next handle (the cursor, past the last one done), then two per record, in KEYS order:
-- ARGV[2i] the version read, ARGV[2i + 1] the re-encoded state.
-- Returns the number of records rewritten.
local rewritten = 0
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'v') == ARGV[2 * i - 2] then
    redis.call('HSET', KEYS[i], 's', ARGV[2 * i - 1])
    rewritten = rewritten + 1
  end
end
redis.call('HSET', KEYS[1], 'next', ARGV[1])
return rewritten
