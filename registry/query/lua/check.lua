-- CHECK: test candidate handles against a predicate program (built by registry/query/check.py).
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or '' to order by the handle itself
-- KEYS[3..] every bitmap, set and column the program refers to (by KEYS index)
-- ARGV[1]   candidate handles, packed
-- ARGV[2]   '1' to return each match's uuid
-- ARGV[3..] the program, ops AND-ed:
--   A n k...              bit set in any of the n bitmaps KEYS[k]
--   N k                   bit clear in KEYS[k]
--   M n (s b)...          member of any set KEYS[s] or bitmap KEYS[b]
--   R col lo hi nullable  value in column KEYS[col] within [lo, hi] (nullable: stored value + 1, 0 = null)
-- Returns, for each match: handle, order value, and (ARGV[2] = '1') uuid. Cheap bit tests
-- run first in program order and nothing is read for a job that fails them.
local want_uuid = ARGV[2] == '1'
local prog_start = 3
local function column(key, h)
  return redis.call('BITFIELD', key, 'GET', 'i64', '#' .. h)[1]
end
local out = {}
for _, h in ipairs(handles(ARGV[1])) do
  local ok = true
  local i = prog_start
  while ok and i <= #ARGV do
    local op = ARGV[i]
    if op == 'A' then
      local cnt = tonumber(ARGV[i + 1])
      local any = false
      for j = 1, cnt do
        if redis.call('GETBIT', KEYS[tonumber(ARGV[i + 1 + j])], h) == 1 then any = true break end
      end
      ok = any
      i = i + 2 + cnt
    elseif op == 'N' then
      ok = redis.call('GETBIT', KEYS[tonumber(ARGV[i + 1])], h) == 0
      i = i + 2
    elseif op == 'M' then
      local cnt = tonumber(ARGV[i + 1])
      local any = false
      for j = 0, cnt - 1 do
        local s, b = KEYS[tonumber(ARGV[i + 2 + 2 * j])], KEYS[tonumber(ARGV[i + 3 + 2 * j])]
        if redis.call('SISMEMBER', s, h) == 1 or redis.call('GETBIT', b, h) == 1 then any = true break end
      end
      ok = any
      i = i + 2 + 2 * cnt
    elseif op == 'R' then
      local v = column(KEYS[tonumber(ARGV[i + 1])], h)
      if ARGV[i + 4] == '1' then
        if v == 0 then ok = false else v = v - 1 end
      end
      ok = ok and v >= tonumber(ARGV[i + 2]) and v <= tonumber(ARGV[i + 3])
      i = i + 5
    end
  end
  if ok then
    out[#out + 1] = h
    if KEYS[2] ~= '' then out[#out + 1] = column(KEYS[2], h) else out[#out + 1] = h end
    if want_uuid then out[#out + 1] = redis.call('GETRANGE', KEYS[1], h * 16, h * 16 + 15) end
  end
end
return out
