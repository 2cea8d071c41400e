-- RANGE_TO_BITMAP: set the bits of the handles of a sort set's members in a lex or score
-- range, one bounded slice per call, into a temporary bitmap.
-- KEYS[1] the bitmap, KEYS[2] the sort set
-- ARGV[1] 'lex' or 'score', ARGV[2] min, ARGV[3] max, ARGV[4] offset, ARGV[5] count (at most),
-- ARGV[6] the bitmap's time to live (ms)
-- Returns how many members were read.
local members
if ARGV[1] == 'lex' then
  members = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', ARGV[4], ARGV[5])
else
  members = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', ARGV[4], ARGV[5])
end
for _, m in ipairs(members) do redis.call('SETBIT', KEYS[1], handle(m), 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return #members
