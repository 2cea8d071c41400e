#!lua
-- PICK: a small driver's jobs (the members of a few small sets, or an id prefix's range of the
-- id sort set) checked against a program, then ordered and paged here: the exact total and the
-- page in one call, with bounded work.
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or '' to order by handle or id
-- KEYS[3..] every bitmap, set and column the program refers to, and the driver's keys
-- ARGV[1] offset, ARGV[2] limit, ARGV[3] desc ('1'/'0')
-- ARGV[4] order: 'value' (KEYS[2]), 'nullable' (KEYS[2] holds value + 1, 0 = null: nulls last),
--         'handle' (creation_order) or 'id'; ties are broken by id, in the same direction
-- ARGV[5] the most candidates to read
-- ARGV[6] the driver: 'sets', then ARGV[7] n and ARGV[8..7+n] the KEYS index of each set;
--         or 'lex', then ARGV[7] the KEYS index of the id sort set, ARGV[8] min, ARGV[9] max
--         (ZRANGEBYLEX bounds)
-- ARGV[...] after the driver's arguments: m, then m bitmaps to build first, each as the KEYS
--         index of a temporary bitmap, n, and the KEYS indexes of the n bitmaps OR-ed into it
--         (a status or origin list is then one bit test per candidate, not one per value;
--         the temporary bitmaps are deleted before returning)
-- ARGV[...] then the program (see lua/checklib.lua)
-- Returns {1, total, uuid...} (the page's 16-byte uuids), or {0} when the driver holds more
-- than ARGV[5] jobs (it grew since it was sized; the caller takes the chunked path).
local offset, limit, desc, order = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local cap = tonumber(ARGV[5])
local hs, from, known = {}, 0, nil
if ARGV[6] == 'lex' then
  local zset = KEYS[tonumber(ARGV[7])]
  if redis.call('ZLEXCOUNT', zset, ARGV[8], ARGV[9]) > cap then return {0} end
  known = {}  -- id sort set members start with the job's uuid: none to read
  for _, m in ipairs(redis.call('ZRANGEBYLEX', zset, ARGV[8], ARGV[9])) do
    local h = handle(m)
    hs[#hs + 1] = h
    known[h] = string.sub(m, 1, 16)
  end
  from = 10
else
  local n = tonumber(ARGV[7])
  local seen = {}
  for j = 1, n do
    for _, m in ipairs(redis.call('SMEMBERS', KEYS[tonumber(ARGV[7 + j])])) do
      local h = tonumber(m)
      if not seen[h] then
        seen[h] = true
        hs[#hs + 1] = h
      end
    end
    if #hs > cap then return {0} end
  end
  from = 8 + n
end
local temps = {}
local m = tonumber(ARGV[from])
from = from + 1
for _ = 1, m do
  local dest, n = KEYS[tonumber(ARGV[from])], tonumber(ARGV[from + 1])
  local sources = {}
  for k = 1, n do sources[k] = KEYS[tonumber(ARGV[from + 1 + k])] end
  redis.call('BITOP', 'OR', dest, unpack(sources))
  redis.call('PEXPIRE', dest, 60000)  -- gone even if this script fails before deleting it
  temps[#temps + 1] = dest
  from = from + 2 + n
end
-- In handle order, so the windowed reads of checklib.lua serve neighbours from one GETRANGE.
table.sort(hs)
local total, page = order_page(hs, from, KEYS[1], KEYS[2], order, desc, offset, limit, known)
for _, t in ipairs(temps) do redis.call('DEL', t) end
return {1, total, unpack(page)}
