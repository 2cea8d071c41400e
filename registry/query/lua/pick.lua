#!lua
-- PICK: a small driver's jobs (the members of a few small sets, an id prefix's range of the id
-- sort set, or a list of job ids) checked against a program, then ordered and paged here: the exact total and the
-- page in one call, with bounded work.
-- KEYS[1]   the uuid array (16 bytes per handle)
-- KEYS[2]   the order field's column (i64 per handle), or '' to order by handle or id
-- KEYS[3..] every bitmap, set and column the program refers to, the driver's keys and the change log
-- ARGV[1] offset, ARGV[2] limit, ARGV[3] desc ('1'/'0')
-- ARGV[4] order: 'value' (KEYS[2]), 'nullable' (KEYS[2] holds value + 1, 0 = null: nulls last),
--         'handle' (creation_order) or 'id'; ties are broken by id, in the same direction
-- ARGV[5] the most candidates to read (an id prefix ordered by id with nothing else to test reads
--         only offset + limit entries, by rank, whatever the prefix holds)
-- ARGV[6] the KEYS index of the change log (its last entry's id is the reply's position)
-- ARGV[7] the job record key prefix: a record's key is it followed by the job's uuid as text (its
--         hash tag is the declared keys', so the records the reply reads are in their slot)
-- ARGV[8] the driver: 'sets', then ARGV[9] n and ARGV[10..9+n] the KEYS index of each set;
--         or 'lex', then ARGV[9] the KEYS index of the id sort index (lua/sortlib.lua), ARGV[10] min, ARGV[11] max
--         (ZRANGEBYLEX bounds); or 'ids', then ARGV[9] n and ARGV[10..9+n] the jobs' 16 uuid
--         bytes (each job's handle is read from its record, keyed as in lua/reply.lua; ids
--         without a listed record are not among the candidates)
-- ARGV[...] after the driver's arguments: m, then m bitmaps to build first, each as the KEYS
--         index of a temporary bitmap, n, and the KEYS indexes of the n bitmaps OR-ed into it
--         (a status or origin list is then one bit test per candidate, not one per value);
--         then a, and a bitmaps to build next the same way by AND (every bitmap filter, those
--         just OR-ed included, as one bit test per candidate); the temporary bitmaps are deleted
--         before returning
-- ARGV[...] then the program (see lua/checklib.lua)
-- Returns {1, total, position, uuid..., record...}: the page's 16-byte uuids, then their records
-- (handle, state per uuid; lua/reply.lua); position is the change log's last id, read in this
-- call. Or {0, position} when the driver holds more than ARGV[5] jobs (it grew since it was
-- sized; the caller takes the chunked path, whose reads all come after this position).
local offset, limit, desc, order = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local cap = tonumber(ARGV[5])
local position = last_change(KEYS[tonumber(ARGV[6])])
local hs, from, known = {}, 0, nil
-- An id prefix's range of the id sort set is already in id order: kept, to page it without a sort.
local in_order = nil
if ARGV[8] == 'lex' then
  local zset = KEYS[tonumber(ARGV[9])]
  local lo, hi = sx_lex_rank(zset, ARGV[10], true), sx_lex_rank(zset, ARGV[11], false)
  local count = math.max(0, hi - lo)
  if order == 'id' and #ARGV == 13 and ARGV[12] == '0' and ARGV[13] == '0' then
    -- Nothing else to test: the page is a rank range of the prefix's range, read alone (offset +
    -- limit entries, whatever the prefix holds; registry/query/cost.py pick_pays bounds it).
    local page
    if desc then
      -- The range's ascending ranks lo .. hi - 1 are descending ranks card - hi .. card - 1 - lo.
      local card = sx_card(zset)
      local first = card - hi + offset
      page = sx_range(zset, first, math.min(card - 1 - lo, first + limit - 1), true)
    else
      page = sx_range(zset, lo + offset, math.min(hi - 1, lo + offset + limit - 1), false)
    end
    local uuids, out = {}, {1, count, position}
    for j, m in ipairs(page) do
      uuids[j] = string.sub(m, 1, 16)
      out[3 + j] = uuids[j]
    end
    return append_records(out, uuids, ARGV[7])
  end
  if count > cap then return {0, position} end
  known = {}  -- id sort set members start with the job's uuid: none to read
  local members = sx_range(zset, lo, hi - 1, false)
  if order == 'id' then in_order = members end
  for _, m in ipairs(members) do
    local h = handle(m)
    hs[#hs + 1] = h
    known[h] = string.sub(m, 1, 16)
  end
  from = 12
elseif ARGV[8] == 'ids' then
  local n = tonumber(ARGV[9])
  known = {}  -- the ids are the uuids: none to read
  for j = 1, n do
    local u = ARGV[9 + j]
    local h = redis.call('HGET', record_key(ARGV[7], u), 'h')
    if h then
      h = tonumber(h)
      if not known[h] then
        hs[#hs + 1] = h
        known[h] = u
      end
    end
  end
  from = 10 + n
else
  local n = tonumber(ARGV[9])
  local seen = {}
  for j = 1, n do
    for _, m in ipairs(redis.call('SMEMBERS', KEYS[tonumber(ARGV[9 + j])])) do
      local h = tonumber(m)
      if not seen[h] then
        seen[h] = true
        hs[#hs + 1] = h
      end
    end
    if #hs > cap then return {0, position} end
  end
  from = 10 + n
end
local temps = {}
for _, op in ipairs({'OR', 'AND'}) do
  local m = tonumber(ARGV[from])
  from = from + 1
  for _ = 1, m do
    local dest, n = KEYS[tonumber(ARGV[from])], tonumber(ARGV[from + 1])
    local sources = {}
    for k = 1, n do sources[k] = KEYS[tonumber(ARGV[from + 1 + k])] end
    redis.call('BITOP', op, dest, unpack(sources))
    redis.call('PEXPIRE', dest, 60000)  -- gone even if this script fails before deleting it
    temps[#temps + 1] = dest
    from = from + 2 + n
  end
end
-- In handle order, so the windowed reads of checklib.lua serve neighbours from one GETRANGE.
table.sort(hs)
local total, page
if in_order then
  -- Test in handle order (windowed reads), then page the matches in the range's own (id) order:
  -- no comparison sort of the matches, which costs ~10 us per match in Lua.
  if #hs > 0 then fit_window(hs[1], hs[#hs], #hs) end
  prefetch(hs, from, nil)
  local ok = {}
  total, page = 0, {}
  for _, h in ipairs(hs) do
    if passes(h, from) then
      ok[h] = true
      total = total + 1
    end
  end
  local a, b, step = 1, #in_order, 1
  if desc then a, b, step = #in_order, 1, -1 end
  local skip = offset
  for j = a, b, step do
    if #page >= limit then break end
    local m = in_order[j]
    if ok[handle(m)] then
      if skip > 0 then skip = skip - 1 else page[#page + 1] = string.sub(m, 1, 16) end
    end
  end
else
  total, page = order_page(hs, from, KEYS[1], KEYS[2], order, desc, offset, limit, known)
end
for _, t in ipairs(temps) do redis.call('DEL', t) end
local out = {1, total, position}
for j, u in ipairs(page) do out[3 + j] = u end
return append_records(out, page, ARGV[7])
