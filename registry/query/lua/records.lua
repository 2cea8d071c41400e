#!lua flags=no-writes
-- RECORDS: the handle and encoded state of each job record, one call instead of a command per job.
-- The record's fields ('h' handle, 's' state) are defined in registry/store/record.py.
-- KEYS[1..] job record hashes
-- No ARGV.
-- Returns {handle 1, state 1, handle 2, state 2, ...} (nil for a missing record).
local out = {}
for i, key in ipairs(KEYS) do
  local hs = redis.call('HMGET', key, 'h', 's')
  out[2 * i - 1], out[2 * i] = hs[1], hs[2]
end
return out
