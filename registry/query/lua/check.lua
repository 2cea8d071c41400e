#!lua flags=no-writes
-- CHECK: test candidate handles against a predicate program (built by registry/query/check.py).
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or KEYS[1] again to order by the handle itself
-- KEYS[3..] every bitmap, set and column the program refers to (by KEYS index)
-- ARGV[1]   candidate handles, packed
-- ARGV[2]   '1' to return each match's uuid
-- ARGV[3..] the program, ops AND-ed (see lua/checklib.lua)
-- Returns, for each match: handle, order value, and (ARGV[2] = '1') uuid. Cheap bit tests
-- run first in program order and nothing is read for a job that fails them.
local want_uuid = ARGV[2] == '1'
local out = {}
local list = handles(ARGV[1])
local lo, hi = math.huge, 0
for _, h in ipairs(list) do
  if h < lo then lo = h end
  if h > hi then hi = h end
end
fit_window(lo, hi, #list)
prefetch(list, 3, KEYS[2] ~= KEYS[1] and KEYS[2] or nil)
for _, h in ipairs(list) do
  if passes(h, 3) then
    out[#out + 1] = h
    if KEYS[2] ~= KEYS[1] then out[#out + 1] = column(KEYS[2], h) else out[#out + 1] = h end
    if want_uuid then out[#out + 1] = uuid(KEYS[1], h) end
  end
end
return out
