#!lua
-- TOP: the matches that can be among the first k in value order, found by counting over a
-- bit-sliced index, without reading one value: a bitmap of the matches before a value range and
-- of those inside it, k - 1 or fewer before it and few (ARGV[3]) inside. Slice by slice from the
-- highest bit, the part of the candidates that comes first in the order (zeros ASC, ones DESC)
-- is set aside whole when it holds at most the k - 1 to skip, else kept alone. A call works
-- through at most the slices it is given; the caller passes the rest to the next call.
-- KEYS[1]   candidate bitmap (the matches still undecided; consumed: overwritten)
-- KEYS[2]   scratch bitmap
-- KEYS[3]   result bitmap: the matches set aside so far, plus (once done) the candidates
-- KEYS[4..] BSI slices, from the highest bit down
-- ARGV[1] skip (k - 1 less the matches set aside so far), ARGV[2] desc ('1'/'0'),
-- ARGV[3] stop (candidates few enough to read), ARGV[4] the candidates' count,
-- ARGV[5] '1' if KEYS[4..] are the last slices, ARGV[6] the three bitmaps' time to live (ms)
-- Returns {the candidates' count, slices done, 1 if the candidates are now in KEYS[2] (else
-- KEYS[1]), done (0/1), skip left}. Once done, KEYS[3] holds the result.
local skip, desc, stop, count = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
local last, ttl = ARGV[5] == '1', ARGV[6]
local cand, scratch, result = KEYS[1], KEYS[2], KEYS[3]
local swapped, done = 0, 0
local k = 4
while k <= #KEYS and count > stop do
  redis.call('BITOP', 'AND', scratch, cand, KEYS[k])
  local ones = redis.call('BITCOUNT', scratch)
  local zeros = count - ones
  local first = desc and ones or zeros
  if first > skip then
    -- The k-th match is in the first part: keep it alone.
    if desc then
      cand, scratch = scratch, cand
      swapped = 1 - swapped
      count = ones
    else
      redis.call('BITOP', 'XOR', cand, cand, scratch)
      count = zeros
    end
  else
    -- The first part comes wholly before the k-th match: set it aside, keep the second.
    skip = skip - first
    if desc then
      redis.call('BITOP', 'OR', result, result, scratch)
      redis.call('BITOP', 'XOR', cand, cand, scratch)
      count = zeros
    else
      redis.call('BITOP', 'XOR', scratch, cand, scratch)  -- the zeros
      redis.call('BITOP', 'OR', result, result, scratch)
      redis.call('BITOP', 'XOR', cand, cand, scratch)  -- the ones
      count = ones
    end
  end
  k = k + 1
end
if count <= stop or (last and k > #KEYS) then
  redis.call('BITOP', 'OR', result, result, cand)
  done = 1
end
for j = 1, 3 do redis.call('PEXPIRE', KEYS[j], ttl) end
return {count, k - 4, swapped, done, skip}
