-- PICK: a small driver's jobs (the members of a few small sets) checked against a program, then
-- ordered and paged here: the exact total and the page in one call, with bounded work.
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or '' to order by handle or id
-- KEYS[3..] the driver's sets, and every bitmap, set and column the program refers to
-- ARGV[1] offset, ARGV[2] limit, ARGV[3] desc ('1'/'0')
-- ARGV[4] order: 'value' (KEYS[2]), 'nullable' (KEYS[2] holds value + 1, 0 = null: nulls last),
--         'handle' (creation_order) or 'id'; ties are broken by id, in the same direction
-- ARGV[5] the most candidates to read, ARGV[6] n: how many driver sets,
-- ARGV[7..6+n] the KEYS index of each driver set, ARGV[7+n..] the program (see lua/checklib.lua)
-- Returns {1, total, uuid...} (the page's 16-byte uuids), or {0} when the sets hold more than
-- ARGV[5] jobs (they grew since they were sized; the caller takes the chunked path).
local offset, limit, desc, order = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local cap, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local seen, hs = {}, {}
for j = 1, n do
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[tonumber(ARGV[6 + j])])) do
    local h = tonumber(m)
    if not seen[h] then
      seen[h] = true
      hs[#hs + 1] = h
    end
  end
  if #hs > cap then return {0} end
end
-- In handle order, so the windowed reads of checklib.lua serve neighbours from one GETRANGE.
table.sort(hs)
if #hs > 0 then fit_window(hs[1], hs[#hs], #hs) end
-- A row: {is null, value, the uuid as four 32-bit numbers, the uuid}. Numbers, not strings:
-- Lua compares strings with strcoll, which follows the server's locale.
local rows = {}
for _, h in ipairs(hs) do
  if passes(h, 7 + n) then
    local u = uuid(KEYS[1], h)
    local a1, a2, a3, a4, b1, b2, b3, b4, c1, c2, c3, c4, d1, d2, d3, d4 = string.byte(u, 1, 16)
    local null, v = false, 0
    if order == 'handle' then
      v = h
    elseif order ~= 'id' then
      v = column(KEYS[2], h)
      if order == 'nullable' then
        if v == 0 then null = true else v = v - 1 end
      end
    end
    rows[#rows + 1] = {
      null, v,
      ((a1 * 256 + a2) * 256 + a3) * 256 + a4, ((b1 * 256 + b2) * 256 + b3) * 256 + b4,
      ((c1 * 256 + c2) * 256 + c3) * 256 + c4, ((d1 * 256 + d2) * 256 + d3) * 256 + d4,
      u,
    }
  end
end
table.sort(rows, function(x, y)
  if x[1] ~= y[1] then return y[1] end  -- nulls last, in either direction
  for k = 2, 6 do
    if x[k] ~= y[k] then
      if desc then return x[k] > y[k] end
      return x[k] < y[k]
    end
  end
  return false
end)
local out = {1, #rows}
for k = offset + 1, math.min(offset + limit, #rows) do out[#out + 1] = rows[k][7] end
return out
