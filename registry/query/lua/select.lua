#!lua
-- SELECT: rank selection over a bit-sliced index, for deep offsets: which value range holds
-- the (skip+1)-th job of the candidate bitmap in value order, found by counting instead of
-- walking. Each step is one or two BITOPs, a BITCOUNT and a ZCOUNT.
-- KEYS[1]   candidate bitmap (consumed: overwritten)
-- KEYS[2]   scratch bitmap
-- KEYS[3]   the order's sort index (its base, Keys.sort; lua/sortlib.lua)
-- KEYS[4..] BSI slices, from the highest bit down
-- ARGV[1] skip, ARGV[2] desc ('1'/'0'), ARGV[3] scale (sort-set units per BSI unit),
-- ARGV[4] stop (sort-set entries in the range small enough to walk), ARGV[5] candidate count,
-- ARGV[6..] the bit number of each slice KEYS[4..].
-- Returns {rank of the range's first entry in walk order, matches before it (above)}.
local skip, desc, scale, stop, count = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cand, scratch = KEYS[1], KEYS[2]
local above, prefix, low = 0, 0, 64
local function bounds()
  return string.format('%.0f', prefix * scale), string.format('%.0f', (prefix + 2 ^ low) * scale - 1)
end
for k = 4, #KEYS do
  local b = tonumber(ARGV[k + 2])
  redis.call('BITOP', 'AND', scratch, cand, KEYS[k])
  local ones = redis.call('BITCOUNT', scratch)
  local zeros = count - ones
  local first = desc and ones or zeros
  local take_ones
  if above + first > skip then
    take_ones = desc
  else
    above = above + first
    take_ones = not desc
  end
  if take_ones then
    cand, scratch = scratch, cand
    count = ones
    prefix = prefix + 2 ^ b
  else
    redis.call('BITOP', 'XOR', cand, cand, scratch)
    count = zeros
  end
  low = b
  local lo, hi = bounds()
  if sx_count(KEYS[3], lo, hi) <= stop then break end
end
local lo, hi = bounds()
local rank
if desc then
  rank = sx_count(KEYS[3], '(' .. hi, '+inf')
else
  rank = sx_count(KEYS[3], '-inf', '(' .. lo)
end
return {rank, above}
