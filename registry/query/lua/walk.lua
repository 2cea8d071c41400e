#!lua flags=no-writes
-- WALK: walk a sort index by rank, keeping members whose handle passes bitmap tests.
-- KEYS[1]            the sort index (its base, Keys.sort; lua/sortlib.lua)
-- KEYS[2..1+nreq]    bitmaps the handle must be set in
-- KEYS[2+nreq..]     bitmaps the handle must be clear in
-- ARGV[1] start rank, ARGV[2] chunk (entries read at most), ARGV[3] desc ('1'/'0'),
-- ARGV[4] nreq, ARGV[5] need (stop after this many matches).
-- Returns {next_rank, exhausted (0/1), member...}.
local start, chunk, desc, nreq, need = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5])
local members = sx_range(KEYS[1], start, start + chunk - 1, desc)
local out = {0, 0}
local scanned = 0
for _, m in ipairs(members) do
  scanned = scanned + 1
  local h = handle(m)
  local ok = true
  for k = 2, #KEYS do
    local bit = redis.call('GETBIT', KEYS[k], h)
    if (k <= 1 + nreq and bit == 0) or (k > 1 + nreq and bit == 1) then ok = false break end
  end
  if ok then
    out[#out + 1] = m
    if #out - 2 >= need then break end
  end
end
out[1] = start + scanned
if #members < chunk and scanned == #members then out[2] = 1 end
return out
