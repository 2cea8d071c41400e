#!lua
-- Layout 4 -> 5, one bounded step of `jobreg migrate` (registry/store/migrate.py): set each listed
-- job's bit in the bitmap of its id's first hex digit, for the handles from ARGV[1] on.
--
-- Idempotent and safe beside running workers: a handle's bit depends only on its uuid, which the
-- apply script writes with the handle and never changes, and a listed job stays listed (the fold
-- only grows a job's state); a worker of this version writing the same job sets the same bit.
--
-- KEYS[1] seq (handle counter), KEYS[2] uuids (16 bytes per handle), KEYS[3] the migration's
-- progress hash, KEYS[4 .. 19] the bitmaps of digits 0 .. f.
-- ARGV[1] first handle, ARGV[2] at most this many handles (bounds the call's work).
-- Returns {next handle (past the last one done), seq}; the cursor ('next') is stored with the
-- bits, so a killed run resumes where this call ended.
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = tonumber(ARGV[1])
local last = math.min(seq, first + tonumber(ARGV[2]) - 1)
if last >= first then
  local bytes = redis.call('GETRANGE', KEYS[2], first * 16, last * 16 + 15)
  -- One BITFIELD per digit (u1 at bit offset h is SETBIT's bit h) instead of one SETBIT per handle:
  -- a sixteenth of the calls into Redis, each flushed at 256 handles to keep unpack() small.
  local pending = {}
  local function flush(digit)
    local args = pending[digit]
    if args and #args > 0 then
      redis.call('BITFIELD', KEYS[4 + digit], unpack(args))
      pending[digit] = {}
    end
  end
  for h = first, last do
    local b = string.byte(bytes, (h - first) * 16 + 1)
    if b then
      local digit = math.floor(b / 16)
      local args = pending[digit] or {}
      pending[digit] = args
      local n = #args
      args[n + 1], args[n + 2], args[n + 3], args[n + 4] = 'SET', 'u1', h, 1
      if n + 4 >= 1024 then flush(digit) end
    end
  end
  for digit = 0, 15 do flush(digit) end
end
redis.call('HSET', KEYS[3], 'next', math.max(first, last + 1))
return {math.max(first, last + 1), seq}
