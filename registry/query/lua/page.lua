#!lua
-- PAGE: the common query in one call: the filter bitmap built from a program, its exact total and
-- one page (by handle, by rank, or by walking the order's sort set), with bounded work. When the
-- page needs more than the budget, it returns its counts and how far it walked, and leaves the
-- filter bitmap in KEYS[7] for the caller's chunked path (registry/query/execute/onecall.py).
-- KEYS[1]   the all bitmap
-- KEYS[2]   seq: handles issued (how many jobs are listed)
-- KEYS[3]   the uuid array (16 bytes per handle)
-- KEYS[4]   the order's sort index (its base, Keys.sort; lua/sortlib.lua; creation_order: unused, pass the id's)
-- KEYS[5]   the order's non-null bitmap (an order without nulls: unused, pass the all bitmap)
-- KEYS[6]   the id sort index (a nullable order's nulls come last, by id)
-- KEYS[7]   the filter bitmap (temporary: written unless there is no program, deleted when done)
-- KEYS[8]   scratch bitmap (temporary, deleted before returning)
-- KEYS[9]   the order field's column (i64 per handle; orders without one: unused, pass KEYS[3])
-- KEYS[10]  the change log (its last entry's id is the reply's position)
-- KEYS[11..] the keys the program refers to (by KEYS index)
-- ARGV[1] offset, ARGV[2] limit, ARGV[3] desc ('1'/'0')
-- ARGV[4] mode: 'handle' (creation_order: the page read from the bitmap), 'rank' (no program:
--         a rank range of the sort set), 'walk' (the sort set walked, each member's bit tested)
-- ARGV[5] nullable order ('1'/'0'), ARGV[6] budget: sort-set entries read at most,
-- ARGV[7] walk limit: walk only if (offset + limit) * listed / total is at most this,
-- ARGV[8] the filter bitmap's time to live (ms)
-- ARGV[9] collect limit: a walk not tried is replaced by collecting the matches, reading their
--         order values and sorting them here, when they are at most this many
-- ARGV[10] how lua/checklib.lua's order_page orders collected matches: 'value', 'nullable', 'handle', 'id'
-- ARGV[11] the job record key prefix: a record's key is it followed by the job's uuid as text (its
--          hash tag is the declared keys', so the records the reply reads are in their slot)
-- ARGV[12..] the program (none: no filter), its ops AND-ed:
--   A n k...        set in any of the n bitmaps KEYS[k]
--   N k             clear in KEYS[k]
--   M nb ns k...    set in any of nb bitmaps KEYS[k], or a member of any of ns (small) sets KEYS[k]
-- Returns {done, total, first, listed, phase, rank, skip, position, item...}: first counts the
-- matches with a value (nullable orders; else the total); position is the change log's last id
-- (lua/reply.lua), read in this call, so it is at or before the first read of any fallback.
-- done 1: the items are the page, each starting with the job's 16 uuid bytes, followed by the
-- page's records (handle, state per item, lua/reply.lua), and phase is 1 if the matches were
-- collected and sorted here, else 0. done 0: no records; the page is not read; phase 0: no walk
-- tried (its estimate is over the walk limit), else the walk ran out of budget in phase 1 (the
-- sort set) or 2 (the nulls, by id) at rank, with skip matches still to skip, and the items are
-- the matches found so far.
local offset, limit, desc = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local mode, nullable, budget = ARGV[4], ARGV[5] == '1', tonumber(ARGV[6])
local walk_limit, ttl = tonumber(ARGV[7]), ARGV[8]
local collect_limit, order = tonumber(ARGV[9]), ARGV[10]
local all, f, scratch = KEYS[1], KEYS[7], KEYS[8]
-- No program: no filter, the all bitmap itself (neither written nor deleted).
local nofilter = #ARGV < 12
if nofilter then f = all end
local position = last_change(KEYS[10])

-- The filter: one BITOP AND of every bitmap an op names whole, then one more per op that
-- needs its own bitmap first (an OR, a negation, small member sets).
local direct, composite = {all}, {}
local i = 12
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'A' then
    local n = tonumber(ARGV[i + 1])
    local ks = {}
    for j = 1, n do ks[j] = KEYS[tonumber(ARGV[i + 1 + j])] end
    if n == 1 then direct[#direct + 1] = ks[1] else composite[#composite + 1] = {'OR', ks, {}} end
    i = i + 2 + n
  elseif op == 'N' then
    composite[#composite + 1] = {'NOT', KEYS[tonumber(ARGV[i + 1])]}
    i = i + 2
  elseif op == 'M' then
    local nb, ns = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    local bs, ss = {}, {}
    for j = 1, nb do bs[j] = KEYS[tonumber(ARGV[i + 2 + j])] end
    for j = 1, ns do ss[j] = KEYS[tonumber(ARGV[i + 2 + nb + j])] end
    if nb == 1 and ns == 0 then direct[#direct + 1] = bs[1] else composite[#composite + 1] = {'OR', bs, ss} end
    i = i + 3 + nb + ns
  else
    return redis.error_reply('PAGE: unknown op ' .. tostring(op))
  end
end
if not nofilter then
  redis.call('BITOP', 'AND', f, unpack(direct))
  for _, c in ipairs(composite) do
    if c[1] == 'NOT' then
      redis.call('BITOP', 'AND', scratch, all, c[2])
      redis.call('BITOP', 'XOR', scratch, all, scratch)
    else
      if #c[2] > 0 then redis.call('BITOP', 'OR', scratch, unpack(c[2])) else redis.call('DEL', scratch) end
      for _, s in ipairs(c[3]) do
        for _, h in ipairs(redis.call('SMEMBERS', s)) do redis.call('SETBIT', scratch, h, 1) end
      end
    end
    redis.call('BITOP', 'AND', f, f, scratch)
  end
  redis.call('PEXPIRE', f, ttl)
end

local listed = tonumber(redis.call('GET', KEYS[2]) or 0)
local total = redis.call('BITCOUNT', f)
local first = total
if nullable then
  redis.call('BITOP', 'AND', scratch, f, KEYS[5])
  first = redis.call('BITCOUNT', scratch)
end
redis.call('DEL', scratch)
-- The page is done: the filter bitmap goes (the caller keeps it only when the page is not done).
-- collected: 1 if the matches were collected and sorted here, 0 if read in order.
local function done(items, collected)
  if not nofilter then redis.call('DEL', f) end
  local out = {1, total, first, listed, collected, 0, 0, position}
  for j, item in ipairs(items) do out[8 + j] = item end
  return append_records(out, items, ARGV[11])
end
if offset >= total then return done({}, 0) end

local function uuid(h)
  return redis.call('GETRANGE', KEYS[3], h * 16, h * 16 + 15)
end

-- creation_order is the handle: count whole blocks of the bitmap to find the one holding the
-- offset-th match, then small slices of it, and decode only the slices the page needs.
local BLOCK, SLICE = 4096, 128
local function bits_of(data, base)
  local hs = {}
  local pos = string.find(data, '[^%z]')
  while pos do
    local byte, mask = string.byte(data, pos), 128
    for bit = 0, 7 do
      if byte >= mask then
        hs[#hs + 1] = (base + pos - 1) * 8 + bit
        byte = byte - mask
      end
      mask = mask / 2
    end
    pos = string.find(data, '[^%z]', pos + 1)
  end
  return hs
end
local function handle_page()
  local out, skip = {}, offset
  local nblocks = math.ceil(redis.call('STRLEN', f) / BLOCK)
  local from, to, step = 0, nblocks - 1, 1
  if desc then from, to, step = nblocks - 1, 0, -1 end
  local per = BLOCK / SLICE
  for b = from, to, step do
    local n = redis.call('BITCOUNT', f, b * BLOCK, b * BLOCK + BLOCK - 1)
    if skip >= n then
      skip = skip - n
    elseif n > 0 then
      local s_from, s_to = 0, per - 1
      if desc then s_from, s_to = per - 1, 0 end
      for s = s_from, s_to, step do
        local lo = b * BLOCK + s * SLICE
        local m = redis.call('BITCOUNT', f, lo, lo + SLICE - 1)
        if skip >= m then
          skip = skip - m
        elseif m > 0 then
          local hs = bits_of(redis.call('GETRANGE', f, lo, lo + SLICE - 1), lo)
          local j_from, j_to = 1 + skip, #hs
          if desc then j_from, j_to = #hs - skip, 1 end
          skip = 0
          for j = j_from, j_to, step do
            out[#out + 1] = uuid(hs[j])
            if #out >= limit then return out end
          end
        end
      end
    end
  end
  return out
end

if mode == 'handle' then
  return done(handle_page(), 0)
end

-- A walk's estimate assumes matches spread evenly along the order; the budget bounds it anyway.
-- Few matches are collected instead: found in the bitmap, their values read and sorted here.
if mode == 'walk' and (offset + limit) * listed / math.max(total, 1) > walk_limit then
  if total > collect_limit then return {0, total, first, listed, 0, 0, offset, position} end
  local hs, byte = {}, 0
  -- BITPOS skips empty stretches in C; a Lua pattern scan of a million-job bitmap costs ~2 ms.
  while true do
    local p = redis.call('BITPOS', f, 1, byte)
    if p < 0 then break end
    local b = math.floor(p / 8)
    for _, h in ipairs(bits_of(redis.call('GETRANGE', f, b, b + 15), b)) do hs[#hs + 1] = h end
    byte = b + 16
  end
  local _, page = order_page(hs, #ARGV + 1, KEYS[3], KEYS[9], order, desc, offset, limit)
  return done(page, 1)
end

local used = 0
-- Walk zset from rank, keeping members set in the filter (and clear in exclude), skipping skip
-- of them, until out holds target items. Returns (rank, skip, finished).
local function walk(zset, exclude, rank, skip, target, out, test)
  local cursor = sx_cursor(zset, rank, desc) -- one seek; the chunks read on from it
  while used < budget do
    local n = math.min(256, budget - used)
    local members = sx_take(cursor, n, false, {})
    for _, m in ipairs(members) do
      rank, used = rank + 1, used + 1
      local h = handle(m)
      local ok = (not test) or redis.call('GETBIT', f, h) == 1
      if ok and exclude then ok = redis.call('GETBIT', exclude, h) == 0 end
      if ok then
        if skip > 0 then
          skip = skip - 1
        else
          out[#out + 1] = m
          if #out >= target then return rank, skip, true end
        end
      end
    end
    if #members < n then return rank, skip, true end  -- the sort set's end
  end
  return rank, skip, false
end

local out, rank, skip, finished = {}, 0, 0, true
if offset < first then
  local need = math.min(limit, first - offset)
  if mode == 'rank' then
    local stop = offset + need - 1
    out = sx_range(KEYS[4], offset, stop, desc)
  else
    rank, skip, finished = walk(KEYS[4], nil, 0, offset, need, out, true)
    if not finished then return {0, total, first, listed, 1, rank, skip, position, unpack(out)} end
  end
  skip = 0
else
  skip = offset - first
end
if #out < limit and nullable then
  rank, skip, finished = walk(KEYS[6], KEYS[5], 0, skip, limit, out, not nofilter)
  if not finished then return {0, total, first, listed, 2, rank, skip, position, unpack(out)} end
end
return done(out, 0)
