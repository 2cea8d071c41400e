#!lua
-- RANGE_TO_BITMAP: set the bits of the handles of a sort set's members in a lex or score
-- range, one bounded slice by rank per call, into a temporary bitmap.
-- KEYS[1] the bitmap, KEYS[2] the sort index (its base, Keys.sort; lua/sortlib.lua)
-- ARGV[1] 'lex' or 'score', ARGV[2] the bound just below the range (exclusive form of its
-- min: '(x' for lex '[x' or score x), ARGV[3] min, ARGV[4] max, ARGV[5] offset into the range,
-- ARGV[6] count (at most), ARGV[7] the bitmap's time to live (ms)
-- Returns how many members were read.
-- The slice is read by rank (the range's first rank is a ZLEXCOUNT/ZCOUNT, O(log N)), not
-- with LIMIT offset, which steps over every skipped member: calls deep into a large range
-- (an id prefix of 60k jobs) would each cost O(offset).
local count_of = ARGV[1] == 'lex' and sx_lexcount or sx_count
local low = ARGV[1] == 'lex' and '-' or '-inf'
local first = count_of(KEYS[2], low, ARGV[2])
local size = count_of(KEYS[2], ARGV[3], ARGV[4])
local offset, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local stop = math.min(offset + count, size) - 1
local members = {}
if stop >= offset then members = sx_range(KEYS[2], first + offset, first + stop, false) end
for _, m in ipairs(members) do redis.call('SETBIT', KEYS[1], handle(m), 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return #members
