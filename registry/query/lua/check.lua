#!lua flags=no-writes
-- CHECK: test candidate handles against a predicate program (built by registry/query/check.py).
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or KEYS[1] again to order by the handle itself
-- KEYS[3..] every bitmap, set and column the program refers to (by KEYS index)
-- ARGV[1]   candidate handles, packed
-- ARGV[2]   '1' to return each match's uuid
-- ARGV[3]   top: 0 returns every match; k > 0 returns only the matches of this call that can be among
--           the first k of every call's matches: its own first k in the order ARGV[4] and direction
--           ARGV[5], and those tied with its k-th (their order past the value is the id's, decided by
--           the caller)
-- ARGV[4]   the order (as lua/checklib.lua's order_page): 'value', 'nullable' (KEYS[2] holds value
--           + 1, 0 = null: nulls come last, by id), 'handle' or 'id'; used only when ARGV[3] > 0
-- ARGV[5]   '1' descending, '0' ascending; used only when ARGV[3] > 0
-- ARGV[6..] the program, ops AND-ed (see lua/checklib.lua)
-- Returns, for each match: handle, order value (as stored), and (ARGV[2] = '1') uuid. With ARGV[3]
-- > 0: {matches with a value, nulls, n, then n such rows, then every null's handle}. Cheap bit
-- tests run first in program order and nothing is read for a job that fails them.
local want_uuid = ARGV[2] == '1'
local top, order, desc = tonumber(ARGV[3]), ARGV[4], ARGV[5] == '1'
local ordered = KEYS[2] ~= KEYS[1]
local out = {}
local list = handles(ARGV[1])
local lo, hi = math.huge, 0
for _, h in ipairs(list) do
  if h < lo then lo = h end
  if h > hi then hi = h end
end
fit_window(lo, hi, #list)
prefetch(list, 6, ordered and KEYS[2] or nil)
if top == 0 then
  for _, h in ipairs(list) do
    if passes(h, 6) then
      out[#out + 1] = h
      if ordered then out[#out + 1] = column(KEYS[2], h) else out[#out + 1] = h end
      if want_uuid then out[#out + 1] = uuid(KEYS[1], h) end
    end
  end
  return out
end
-- Top mode: per match with a value its sort key, handle, stored value and uuid, in four arrays (a
-- table per match costs more than the rest of its work); the key of 'id' is the uuid's first 32 bits
-- (a number: Lua compares strings with the server's locale), ties resolved by the caller.
local keys, hs, vs, us, nulls = {}, {}, {}, {}, {}
local by_id = order == 'id'
for _, h in ipairs(list) do
  if passes(h, 6) then
    local v = h
    if ordered then v = column(KEYS[2], h) end
    if order == 'nullable' and v == 0 then
      nulls[#nulls + 1] = h
    else
      local n = #hs + 1
      hs[n], vs[n], keys[n] = h, v, v
      if want_uuid or by_id then
        local u = uuid(KEYS[1], h)
        us[n] = u
        if by_id then
          local a, b, c, d = string.byte(u, 1, 4)
          keys[n] = ((a * 256 + b) * 256 + c) * 256 + d
        end
      end
    end
  end
end
local n = #hs
local kth = nil
if n > top then
  if order == 'handle' then
    kth = desc and hs[n + 1 - top] or hs[top] -- in ascending handle order already
  else
    -- The k-th key from a copy of the keys alone (lua/checklib.lua kth_smallest).
    local copy = {}
    for i = 1, n do copy[i] = keys[i] end
    kth = kth_smallest(copy, 1, n, desc and n + 1 - top or top)
  end
end
out = {n, #nulls, 0}
local kept = 0
for i = 1, n do
  local key = keys[i]
  if kth == nil or (desc and key >= kth) or (not desc and key <= kth) then
    kept = kept + 1
    out[#out + 1] = hs[i]
    out[#out + 1] = vs[i]
    if want_uuid then out[#out + 1] = us[i] end
  end
end
out[3] = kept
for _, h in ipairs(nulls) do out[#out + 1] = h end
return out
