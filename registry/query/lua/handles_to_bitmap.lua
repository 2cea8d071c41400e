#!lua
-- HANDLES_TO_BITMAP: set the bit of each handle in a temporary bitmap.
-- KEYS[1] the bitmap
-- ARGV[1] handles, packed; ARGV[2] its time to live (ms)
-- Returns how many handles were set.
local list = handles(ARGV[1])
for _, h in ipairs(list) do redis.call('SETBIT', KEYS[1], h, 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return #list
