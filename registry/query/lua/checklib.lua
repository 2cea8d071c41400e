-- Predicate tests over per-handle data, shared by CHECK and PICK (prepended after lib.lua, see
-- registry/query/scripts.py). No KEYS or ARGV of its own: a program is a run of ARGV whose ops
-- name keys by their KEYS index (the writer is registry/query/check.py):
--   A n k...              bit set in any of the n bitmaps KEYS[k]
--   N k                   bit clear in KEYS[k]
--   M n (s b)...          member of any set KEYS[s] or bitmap KEYS[b]
--   R col lo hi nullable  value in column KEYS[col] within [lo, hi] (nullable: stored value + 1, 0 = null)
-- Candidates come in handle order and often close together (a project's jobs, a filter
-- bitmap's bits), so each key is read a window at a time with one GETRANGE and tested in
-- Lua, instead of a GETBIT/BITFIELD call per candidate and key (a call costs ~1.5 us, a
-- Lua byte test a tenth of that). WINDOW handles per read, i.e. WINDOW/8 bytes of a bitmap,
-- WINDOW*8 of a column, WINDOW*16 of the uuid array: fit_window sizes it to the candidates'
-- spacing, so that scattered ones (a user's jobs over a million handles) do not each copy
-- kilobytes of which they use a few bytes.
-- Candidates scattered further apart than the smallest window (a project's or an id prefix's jobs
-- over a million handles) would still cost a GETRANGE each per key: for them prefetch reads the
-- keys the program tests, and the order column, for many candidates at once, BATCH handles per
-- BITFIELD_RO call (one GET inside a call costs a fraction of a call), into cached.
local WINDOW = 256
local SCATTERED = false
local BATCH = 500
local windows = {}
local cached = {}
-- Size the windows for candidates from lo to hi (handles), n of them.
local function fit_window(lo, hi, n)
  local gap = (hi - lo + 1) / math.max(n, 1)
  if gap >= 64 then WINDOW = 8 elseif gap >= 8 then WINDOW = 64 else WINDOW = 256 end
  SCATTERED = gap >= 64
end
-- Read key for every handle of list into cached[key] (width 0: a bitmap's bit, 8: an i64 column
-- value). Past a key's end BITFIELD reads 0, as span's readers do.
local function fetch(key, list, width)
  if cached[key] ~= nil then return end
  local t = {}
  local enc, pre = width == 0 and 'u1' or 'i64', width == 0 and '' or '#'
  for i = 1, #list, BATCH do
    local last = math.min(i + BATCH - 1, #list)
    local args = {}
    for j = i, last do
      args[#args + 1] = 'GET'
      args[#args + 1] = enc
      args[#args + 1] = pre .. list[j]
    end
    local got = redis.call('BITFIELD_RO', key, unpack(args))
    for j = i, last do t[list[j]] = got[j - i + 1] end
  end
  cached[key] = t
end
local function span(key, h, width)
  -- (bytes of the window holding h, 1-based index of h's first byte in them), width in bytes
  -- per handle (0: one bit per handle).
  local w = math.floor(h / WINDOW)
  local c = windows[key]
  if c == nil or c[1] ~= w then
    local per = width == 0 and WINDOW / 8 or WINDOW * width
    c = {w, redis.call('GETRANGE', key, w * per, w * per + per - 1)}
    windows[key] = c
  end
  local off = h - w * WINDOW
  return c[2], width == 0 and math.floor(off / 8) + 1 or off * width + 1
end
local function getbit(key, h)
  local c = cached[key]
  if c ~= nil and c[h] ~= nil then return c[h] end
  local data, at = span(key, h, 0)
  local byte = string.byte(data, at)
  if byte == nil then return 0 end  -- past the bitmap's end: clear
  return math.floor(byte / 2 ^ (7 - h % 8)) % 2  -- plain arithmetic: no bit library needed
end
local function column(key, h)
  local c = cached[key]
  if c ~= nil and c[h] ~= nil then return c[h] end
  local data, at = span(key, h, 8)
  if #data < at + 7 then return 0 end  -- past the column's end: never written, 0
  -- Big-endian i64 by hand (no struct library needed); as exact as BITFIELD's reply once in a Lua number.
  -- The eight bytes in one string.byte call: a C call costs more than the arithmetic.
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(data, at, at + 7)
  if b1 < 128 then
    return ((((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6) * 256 + b7) * 256 + b8
  end
  -- Negative: two's complement, -(~x) - 1.
  local v = (255 - b1) * 256 + 255 - b2
  v = ((v * 256 + 255 - b3) * 256 + 255 - b4) * 256 + 255 - b5
  v = ((v * 256 + 255 - b6) * 256 + 255 - b7) * 256 + 255 - b8
  return -v - 1
end
local function uuid(key, h)
  local data, at = span(key, h, 16)
  return string.sub(data, at, at + 15)
end
-- Whether handle h passes the program op at ARGV[i], and the next op's index.
local function check_op(h, i)
  local op = ARGV[i]
  if op == 'A' then
    local cnt = tonumber(ARGV[i + 1])
    for j = 1, cnt do
      if getbit(KEYS[tonumber(ARGV[i + 1 + j])], h) == 1 then return true, i + 2 + cnt end
    end
    return false, i + 2 + cnt
  elseif op == 'N' then
    return getbit(KEYS[tonumber(ARGV[i + 1])], h) == 0, i + 2
  elseif op == 'M' then
    local cnt = tonumber(ARGV[i + 1])
    for j = 0, cnt - 1 do
      local s, b = KEYS[tonumber(ARGV[i + 2 + 2 * j])], KEYS[tonumber(ARGV[i + 3 + 2 * j])]
      if redis.call('SISMEMBER', s, h) == 1 or getbit(b, h) == 1 then return true, i + 2 + 2 * cnt end
    end
    return false, i + 2 + 2 * cnt
  elseif op == 'R' then
    local v = column(KEYS[tonumber(ARGV[i + 1])], h)
    if ARGV[i + 4] == '1' then
      if v == 0 then return false, i + 5 end
      v = v - 1
    end
    return v >= tonumber(ARGV[i + 2]) and v <= tonumber(ARGV[i + 3]), i + 5
  end
  error('unknown program op ' .. tostring(op))
end
-- Whether handle h passes the program ARGV[from..] (cheap bit tests first, in program order;
-- nothing more is read for a job once one op fails).
local function passes(h, from)
  local ok, i = true, from
  while ok and i <= #ARGV do
    ok, i = check_op(h, i)
  end
  return ok
end
-- The bitmaps and columns (width 0 or 8) op ARGV[i] reads ('A', 'N', 'R').
local function op_keys(i)
  local op, out = ARGV[i], {}
  if op == 'A' then
    for j = 1, tonumber(ARGV[i + 1]) do out[#out + 1] = {KEYS[tonumber(ARGV[i + 1 + j])], 0} end
  elseif op == 'N' then
    out[1] = {KEYS[tonumber(ARGV[i + 1])], 0}
  elseif op == 'R' then
    out[1] = {KEYS[tonumber(ARGV[i + 1])], 8}
  end
  return out
end
-- When the candidates of list (after fit_window) are scattered: read what the program ARGV[from..]
-- tests op by op, each op's keys for the candidates that passed the ops before it only (as
-- passes reads them), then the order column col (nil: none) for those that pass them all.
local function prefetch(list, from, col)
  if not SCATTERED or #list == 0 then return end
  -- The average gap hides clusters (a project's jobs created in bursts): prefetch only when most
  -- candidates would still need a window read of their own (a BITFIELD GET is not free either).
  local reads, last = 0, -1
  for _, h in ipairs(list) do
    local w = math.floor(h / WINDOW)
    if w ~= last then reads, last = reads + 1, w end
  end
  if reads * 4 < #list * 3 then return end
  local i = from
  while i <= #ARGV and #list > 0 do
    -- A set membership test (SISMEMBER) cannot be cached: testing it here too would make it twice.
    if ARGV[i] == 'M' then return end
    for _, kw in ipairs(op_keys(i)) do fetch(kw[1], list, kw[2]) end
    local kept, next_i = {}, i
    for _, h in ipairs(list) do
      local ok
      ok, next_i = check_op(h, i)
      if ok then kept[#kept + 1] = h end
    end
    list, i = kept, next_i
  end
  if col and #list > 0 then fetch(col, list, 8) end
end

-- The k-th smallest of the numbers a[lo..hi], by Hoare's quickselect (middle pivot: sorted and
-- reversed runs, common here, partition evenly); a is reordered so that a[lo..k-1] <= a[k] <=
-- a[k+1..hi]. ~0.08 us a number, where table.sort costs ~0.2 (400 numbers, measured).
local function kth_smallest(a, lo, hi, k)
  while lo < hi do
    local p = a[math.floor((lo + hi) / 2)]
    local i, j = lo, hi
    while i <= j do
      while a[i] < p do i = i + 1 end
      while a[j] > p do j = j - 1 end
      if i <= j then
        a[i], a[j] = a[j], a[i]
        i, j = i + 1, j - 1
      end
    end
    if k <= j then
      hi = j
    elseif k >= i then
      lo = i
    else
      return a[k]
    end
  end
  return a[k]
end

-- Read the 16 uuid bytes of row (rows as page_window takes them) into its fields 3..7: the uuid as
-- four 32-bit numbers, then the bytes. Numbers, not strings: Lua compares strings with strcoll,
-- which follows the server's locale.
local function read_uuid(row, uuids, known)
  if row[7] then return end
  local h = row[2]
  local u = known and known[h] or redis.call('GETRANGE', uuids, h * 16, h * 16 + 15)
  local a1, a2, a3, a4, b1, b2, b3, b4, c1, c2, c3, c4, d1, d2, d3, d4 = string.byte(u, 1, 16)
  row[3], row[4] = ((a1 * 256 + a2) * 256 + a3) * 256 + a4, ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  row[5], row[6] = ((c1 * 256 + c2) * 256 + c3) * 256 + c4, ((d1 * 256 + d2) * 256 + d3) * 256 + d4
  row[7] = u
end

-- The uuids of the rows at positions first..last (1-based) of rows ordered by (key, id), in the
-- direction desc. A row is {key (a number), handle, 0, 0, 0, 0, false}: read_uuid fills the rest.
-- Sorting every row with a Lua comparator costs ~1.3 us a row (measured, 1,600 rows); so the keys
-- at the window's two ends are selected from the keys alone (kth_smallest), and only the rows with
-- a key between them (the window and the rows tied with its ends) have their uuids read and are
-- sorted with the comparator.
local function page_window(rows, first, last, desc, uuids, known)
  local n = #rows
  last = math.min(last, n)
  if first > last then return {} end
  local keys = {}
  for i = 1, n do keys[i] = rows[i][1] end
  -- ascending positions of the window's ends
  local a, b = first, last
  if desc then a, b = n + 1 - last, n + 1 - first end
  local hi = kth_smallest(keys, 1, n, b)
  local lo = kth_smallest(keys, 1, b, a)
  local before, pick = 0, {}
  for i = 1, n do
    local row = rows[i]
    local k = row[1]
    if k < lo then
      if not desc then before = before + 1 end
    elseif k > hi then
      if desc then before = before + 1 end
    else
      read_uuid(row, uuids, known)
      pick[#pick + 1] = row
    end
  end
  table.sort(pick, function(x, y)
    for k = 1, 6 do
      if k ~= 2 and x[k] ~= y[k] then
        if desc then return x[k] > y[k] end
        return x[k] < y[k]
      end
    end
    return false
  end)
  local page = {}
  for j = first - before, last - before do page[#page + 1] = pick[j][7] end
  return page
end

-- The page of the handles hs (ascending) that pass the program ARGV[from..] (none: from past
-- #ARGV), ordered by order ('value': the column col; 'nullable': it holds value + 1, 0 = null,
-- nulls last; 'handle'; 'id'), ties broken by id, all in the direction desc (nulls by id too);
-- uuids is the uuid array, known (optional) the uuids of some handles already at hand.
-- Returns (matches, the uuids of matches offset+1 .. offset+limit). Only the uuids the order
-- needs are read: every match's for 'id', else the page's and those tied with its ends (and,
-- when the page reaches a nullable order's nulls, every null's).
local function order_page(hs, from, uuids, col, order, desc, offset, limit, known)
  if #hs > 0 then fit_window(hs[1], hs[#hs], #hs) end
  prefetch(hs, from, (order == 'value' or order == 'nullable') and col or nil)
  local rows, nulls = {}, {}
  for _, h in ipairs(hs) do
    if passes(h, from) then
      if order == 'handle' then
        rows[#rows + 1] = h
      elseif order == 'id' then
        local row = {0, h, 0, 0, 0, 0, false}
        read_uuid(row, uuids, known)
        row[1] = row[3]
        rows[#rows + 1] = row
      else
        local v = column(col, h)
        if order == 'nullable' then
          if v == 0 then nulls[#nulls + 1] = {0, h, 0, 0, 0, 0, false} else rows[#rows + 1] = {v - 1, h, 0, 0, 0, 0, false} end
        else
          rows[#rows + 1] = {v, h, 0, 0, 0, 0, false}
        end
      end
    end
  end
  local m = #rows
  local first, last = offset + 1, offset + limit
  if order == 'handle' then
    -- Handles are unique and came in ascending order: the page is a slice, no sort.
    local page = {}
    for p = first, math.min(last, m) do
      local h = desc and rows[m + 1 - p] or rows[p]
      page[#page + 1] = known and known[h] or redis.call('GETRANGE', uuids, h * 16, h * 16 + 15)
    end
    return m, page
  end
  local page = page_window(rows, first, last, desc, uuids, known)
  if last > m and #nulls > 0 then
    -- Nulls come last, ordered by id: every null's uuid is read to order them.
    for _, row in ipairs(nulls) do
      read_uuid(row, uuids, known)
      row[1] = row[3]
    end
    for _, u in ipairs(page_window(nulls, math.max(first - m, 1), last - m, desc, uuids, known)) do
      page[#page + 1] = u
    end
  end
  return m + #nulls, page
end
