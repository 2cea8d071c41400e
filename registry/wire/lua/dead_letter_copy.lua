#!lua
-- Step 1 of dead-lettering (registry/wire/deadletter.py): copy entries to the dead-letter stream,
-- each once. The contract fixes the dead stream's name, so it cannot share a slot with the events
-- stream and the acknowledgement (step 2) is a separate call; the marker makes a retry after a
-- crash in between reuse a copy instead of adding a second one.
-- KEYS[1] dead-letter stream, KEYS[2] sources hash (source entry id -> copy id), both in one slot.
-- ARGV[1] dead-letter MAXLEN (~), then per entry: its source entry id, n, and the copy's n
-- values (field, value, ...).
-- Returns per entry: copy id, then 1 when this call made the copy, 0 when an earlier one had.
local unpack = unpack or table.unpack
local out = {}
local i = 2
while i <= #ARGV do
  local src, n = ARGV[i], tonumber(ARGV[i + 1])
  local made = redis.call('HGET', KEYS[2], src)
  -- A copy trimmed away by MAXLEN meanwhile is made again: the entry must not vanish.
  if made and #redis.call('XRANGE', KEYS[1], made, made, 'COUNT', 1) > 0 then
    out[#out + 1] = made
    out[#out + 1] = 0
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 2, i + 1 + n))
    redis.call('HSET', KEYS[2], src, id)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
  i = i + 2 + n
end
return out
