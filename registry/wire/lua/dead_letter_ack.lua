#!lua
-- Step 2 of dead-lettering (registry/wire/deadletter.py): acknowledge entries already copied to the
-- dead-letter stream and forget their failure bookkeeping, all in the events stream's slot.
-- KEYS[1] events stream, KEYS[2] failures hash, KEYS[3] failure counts hash ({<events>}:..., one slot).
-- ARGV[1] group, ARGV[2] consumer, then the entry ids.
-- Returns, per id, 1 when this call acknowledged it, 0 when it was no longer pending for this
-- consumer: finished by another worker, or claimed by one (which then reuses the copy through
-- the marker step 1 left, so it is not acknowledged here on that worker's behalf).
local out = {}
for i = 3, #ARGV do
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #mine > 0 then
    out[#out + 1] = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HDEL', KEYS[3], ARGV[i])
  else
    out[#out + 1] = 0
  end
end
return out
