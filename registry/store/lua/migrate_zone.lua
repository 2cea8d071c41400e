#!lua
-- Layout 7 -> 8, one bounded step of `jobreg migrate` (registry/store/migrate.py): widen the
-- updated_at zone map (per block of ARGV[3] handles: the largest value, and the smallest plus one)
-- to cover the updated_at column of the handles from ARGV[1] on.
--
-- Widening, as the apply script does (registry/store/lua/apply.lua, WidenZone), so it is idempotent
-- and commutes with a worker's writes: updated_at only grows, a block's max stays exact and its min
-- (the smallest value seen) stays a valid lower bound whatever order the two write in.
--
-- KEYS[1] seq (handle counter), KEYS[2] uuids (unused: every step script takes it), KEYS[3] the
-- migration's progress hash, KEYS[4] the updated_at column (i64 per handle), KEYS[5] its zone map's
-- max half, KEYS[6] its min half (i64 per block).
-- ARGV[1] first handle, ARGV[2] at most this many handles (bounds the call's work), ARGV[3] the
-- zone block size (registry/store/indexes.py ZONE_SIZE).
-- Returns {next handle (past the last one done), seq}; the cursor ('next') is stored with the
-- bounds, so a killed run resumes where this call ended.
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = tonumber(ARGV[1])
local last = math.min(seq, first + tonumber(ARGV[2]) - 1)
local size = tonumber(ARGV[3])
if last >= first then
  local high, low = {}, {}
  -- One BITFIELD GET per 256 handles (unpack's stack limit), not one command per handle.
  for from = first, last, 256 do
    local to = math.min(last, from + 255)
    local args = {}
    for h = from, to do args[#args + 1] = 'GET'; args[#args + 1] = 'i64'; args[#args + 1] = '#' .. h end
    local got = redis.call('BITFIELD', KEYS[4], unpack(args))
    for i, value in ipairs(got) do
      if value > 0 then  -- 0: a handle whose column was never written (no value to bound)
        local block = math.floor((from + i - 1) / size)
        if not high[block] or value > high[block] then high[block] = value end
        if not low[block] or value < low[block] then low[block] = value end
      end
    end
  end
  -- Microseconds since 1970 are below 2^53: exact as Lua numbers, written back with %.0f.
  for block, value in pairs(high) do
    local at = '#' .. block
    if value > redis.call('BITFIELD', KEYS[5], 'GET', 'i64', at)[1] then
      redis.call('BITFIELD', KEYS[5], 'SET', 'i64', at, string.format('%.0f', value))
    end
    local stored = redis.call('BITFIELD', KEYS[6], 'GET', 'i64', at)[1]
    if stored == 0 or low[block] + 1 < stored then
      redis.call('BITFIELD', KEYS[6], 'SET', 'i64', at, string.format('%.0f', low[block] + 1))
    end
  end
end
redis.call('HSET', KEYS[3], 'next', math.max(first, last + 1))
return {math.max(first, last + 1), seq}
