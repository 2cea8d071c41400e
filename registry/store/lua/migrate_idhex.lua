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
  for h = first, last do
    local b = string.byte(bytes, (h - first) * 16 + 1)
    if b then redis.call('SETBIT', KEYS[4 + math.floor(b / 16)], h, 1) end
  end
end
redis.call('HSET', KEYS[3], 'next', math.max(first, last + 1))
return {math.max(first, last + 1), seq}
