#!lua
-- Apply folded job states to their records and every index, all or nothing per call: a
-- compare-and-set on each job's record version (registry/store/record.py), so a job's state,
-- record, change-log entry and index changes happen together, or not at all.
--
-- KEYS[1] seq (handle counter), KEYS[2] uuids (16 bytes per handle), KEYS[3] change log, then
-- every index key the ops touch (see KeyTable in registry/store/ops.py; a sort index by its base,
-- whose keys lua/sortlib.lua, prepended, builds under the same hash tag), then the n jobs'
-- records: job j's is KEYS[#KEYS - n + j].
-- ARGV[1] set->bitmap threshold of member indexes, ARGV[2] change-log retention (MAXLEN ~),
-- ARGV[3] the call's fresh jobs' bitmap words, column runs, zone values and member adds (JSON,
-- registry/store/fresh.py),
-- ARGV[4] their column blob, then four per job j: ARGV[4j + 1] expected version ('' = no record
-- yet), ARGV[4j + 2] state blob, ARGV[4j + 3] uuid16 ('' while the job is not listed),
-- ARGV[4j + 4] its other index ops as JSON (registry/store/ops.py; each op names its keys by
-- KEYS index, never the handle).
-- Returns per job its handle (0 while not listed); or, when any version moved, writes nothing
-- and returns -1 for those jobs and -2 for the others (the caller folds again and retries).
-- Either way one more element follows the jobs': how long the call ran, in microseconds (from
-- TIME), which the projection uses to size the next calls to its time budget.
--
-- Cost: the ops of all the call's jobs are grouped by key and each key is written by one command
-- (a BITFIELD with one SET per job, one ZADD with every member...), and fresh jobs' bits and
-- columns come as whole runs; so a call runs a few commands per index key plus three per job,
-- instead of one command per op (~80 per new job). Phases: read and check every record, then
-- every index write, then records and change log last, so an error reply part-way (a WRONGTYPE)
-- leaves the records at their old versions and a retry redoes the same idempotent index writes.
local started = redis.call('TIME')
local function elapsed_us()
  local now = redis.call('TIME')
  return (tonumber(now[1]) - tonumber(started[1])) * 1000000 + tonumber(now[2]) - tonumber(started[2])
end
local threshold = tonumber(ARGV[1])
local n = (#ARGV - 4) / 4
local records = #KEYS - n
local result, ok, old_state, version_of, listed_before, handle, fresh = {}, {}, {}, {}, {}, {}, {}

-- 1. Compare-and-set check of every job before anything is written.
local moved = false
for j = 1, n do
  local got = redis.call('HMGET', KEYS[records + j], 'v', 'h', 's')
  if (got[1] or '') ~= ARGV[4 * j + 1] then
    result[j], moved = -1, true
  else
    result[j] = -2
    ok[#ok + 1] = j
    version_of[j], old_state[j] = got[1], got[3]
    if got[2] then
      listed_before[j] = true
      handle[j] = tonumber(got[2])
    elseif ARGV[4 * j + 3] ~= '' then
      fresh[#fresh + 1] = j
    end
  end
end
if moved then
  result[n + 1] = elapsed_us()
  return result
end
local runs = cjson.decode(ARGV[3])
if runs[1] ~= #fresh then
  return redis.error_reply('apply: the call names ' .. runs[1] .. ' fresh jobs, the records ' .. #fresh)
end

-- Handles for the jobs listed now: consecutive, in job order.
local first = 0
if #fresh > 0 then
  first = redis.call('INCRBY', KEYS[1], #fresh) - #fresh + 1
  local uuids = {}
  for i, j in ipairs(fresh) do
    handle[j] = first + i - 1
    uuids[i] = ARGV[4 * j + 3]
  end
  redis.call('SETRANGE', KEYS[2], first * 16, table.concat(uuids))
end

-- 2. Every index write, grouped by key (appends keep each key's writes in job order). Groups are
-- found by the key's number, per kind: building a string id per op cost more than the writes.
local bits, sorted, unsorted, columns, zones, members = {}, {}, {}, {}, {}, {}
local function list(kind, key)
  local g = kind[key]
  if not g then
    g = {}
    kind[key] = g
  end
  return g
end
local function push(g, a, b, c, d) -- trailing nils push nothing
  local m = #g
  g[m + 1], g[m + 2], g[m + 3], g[m + 4] = a, b, c, d
end

local blob, at = ARGV[4], 1
for _, c in ipairs(runs[3]) do -- FreshColumn: key, start, length
  redis.call('SETRANGE', KEYS[c[1]], (first + c[2]) * 8, string.sub(blob, at, at + c[3] - 1))
  at = at + c[3]
end

-- The smallest decimal string above a non-negative one: a zone map's lower half stores value + 1,
-- exactly (Lua numbers would round a value past 2^53).
local function plus_one(s)
  local i = #s
  while i > 0 and string.byte(s, i) == 57 do i = i - 1 end -- trailing '9's become '0's
  if i == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, i - 1) .. string.char(string.byte(s, i) + 1) .. string.rep('0', #s - i)
end
for _, z in ipairs(runs[4]) do -- FreshZone: max_key, min_key, block_size, values ('' for null)
  local maps = list(zones, z[1])
  for p, s in ipairs(z[4]) do
    if s ~= '' then
      local g, value = list(maps, math.floor((first + p - 1) / z[3])), tonumber(s)
      if not g.high or value > g.high then g.high, g.high_s = value, s end
      if not g.low or value < g.low then g.low, g.low_s, g.low_raw = value, nil, s end
      g.min_key = z[2]
    end
  end
end
for _, m in ipairs(runs[5]) do -- FreshMember: set_key, bitmap_key, offsets
  local g = members[m[1]]
  if not g then
    g = {bitmap = m[2], adds = {}, removes = {}}
    members[m[1]] = g
  end
  for _, p in ipairs(m[3]) do g.adds[#g.adds + 1] = first + p end
end

for _, j in ipairs(ok) do
  local h = handle[j]
  if h then
    -- Sort-set member: uuid16 then the handle as 4 big-endian bytes.
    local member = ARGV[4 * j + 3] .. string.char(math.floor(h / 16777216) % 256, math.floor(h / 65536) % 256,
      math.floor(h / 256) % 256, h % 256)
    for _, op in ipairs(cjson.decode(ARGV[4 * j + 4])) do
      local kind = op[1]
      if kind == 'B' then -- SetBit: key, value
        push(list(bits, op[2]), 'SET', 'u1', h, op[3])
      elseif kind == 'S' then -- FlipBits: flips
        for _, k in ipairs(op[2]) do
          if k > 0 then push(list(bits, k), 'SET', 'u1', h, 1) else push(list(bits, -k), 'SET', 'u1', h, 0) end
        end
      elseif kind == 'Z' then -- SortAdd: key, score, old score ('' if none)
        push(list(sorted, op[2]), op[3], member, op[4])
      elseif kind == 'z' then -- SortRemove: key, score
        push(list(unsorted, op[2]), op[3], member)
      elseif kind == 'C' then -- SetColumn: key, value
        push(list(columns, op[2]), 'SET', 'i64', '#' .. h, op[3])
      elseif kind == 'Q' then -- WidenZone: max_key, value, value_plus_one, block_size, min_key
        -- One entry per (zone map, block): the widest bounds the call's jobs need.
        local block = math.floor(h / op[5])
        local g = list(list(zones, op[2]), block)
        local value = tonumber(op[3])
        if not g.high or value > g.high then g.high, g.high_s = value, op[3] end
        if not g.low or value < g.low then g.low, g.low_s, g.low_raw = value, op[4], nil end
        g.min_key = op[6]
      elseif kind == 'M' then -- Member: set_key, bitmap_key, present
        local g = members[op[2]]
        if not g then
          g = {bitmap = op[3], adds = {}, removes = {}}
          members[op[2]] = g
        end
        if op[4] == 1 then push(g.adds, h) else push(g.removes, h) end
      else
        return redis.error_reply('unknown apply op ' .. tostring(kind))
      end
    end
  end
end

-- Fresh words (flat: key, start, type, word): one BITFIELD each, straight away, unless the key has
-- per-job bits in this call too, which then go in the same command. Fresh and per-job bits never
-- share a handle, so their order does not matter.
local words = runs[2]
for i = 1, #words, 4 do
  local k = words[i]
  local g = bits[k]
  if g then
    push(g, 'SET', words[i + 2], first + words[i + 1], words[i + 3])
  else
    redis.call('BITFIELD', KEYS[k], 'SET', words[i + 2], first + words[i + 1], words[i + 3])
  end
end

-- BITFIELD SET u1 over many handles, in commands of at most 256 SETs (unpack's stack limit).
local function set_bits(key, handles, value)
  for i = 1, #handles, 256 do
    local args = {}
    for k = i, math.min(i + 255, #handles) do push(args, 'SET', 'u1', handles[k], value) end
    redis.call('BITFIELD', key, unpack(args))
  end
end

for key, g in pairs(bits) do redis.call('BITFIELD', KEYS[key], unpack(g)) end
for key, g in pairs(columns) do redis.call('BITFIELD', KEYS[key], unpack(g)) end
-- Sort indexes (lua/sortlib.lua, prepended): an entry moves by a removal at its old score and an
-- insert; both are no-ops when already done, so a retried call changes nothing twice.
for key, g in pairs(sorted) do
  for i = 1, #g, 3 do
    if g[i + 2] ~= '' then sx_rem(KEYS[key], g[i + 2], g[i + 1]) end
    sx_add_later(KEYS[key], g[i], g[i + 1])
  end
end
for key, g in pairs(unsorted) do
  for i = 1, #g, 2 do
    sx_rem(KEYS[key], g[i], g[i + 1])
  end
end
sx_flush() -- the sort indexes' held-back adds and counts, once per call (lua/sortlib.lua)
for key, blocks in pairs(zones) do
  for block, g in pairs(blocks) do
    local high, low_key, at_block = KEYS[key], KEYS[g.min_key], '#' .. block
    if g.high > redis.call('BITFIELD', high, 'GET', 'i64', at_block)[1] then
      redis.call('BITFIELD', high, 'SET', 'i64', at_block, g.high_s)
    end
    local low = redis.call('BITFIELD', low_key, 'GET', 'i64', at_block)[1]
    if low == 0 or g.low + 1 < low then
      redis.call('BITFIELD', low_key, 'SET', 'i64', at_block, g.low_s or plus_one(g.low_raw))
    end
  end
end
for key, g in pairs(members) do -- the set until it outgrows the threshold, then the bitmap
  local set, bitmap = KEYS[key], KEYS[g.bitmap]
  if #g.adds > 0 then
    if redis.call('EXISTS', bitmap) == 1 then
      set_bits(bitmap, g.adds, 1)
    else
      redis.call('SADD', set, unpack(g.adds))
      if redis.call('SCARD', set) > threshold then
        set_bits(bitmap, redis.call('SMEMBERS', set), 1)
        redis.call('DEL', set)
      end
    end
  end
  if #g.removes > 0 then
    if redis.call('EXISTS', bitmap) == 1 then
      set_bits(bitmap, g.removes, 0)
    else
      redis.call('SREM', set, unpack(g.removes))
    end
  end
end

-- 3. Records and the change log (fields defined and parsed in registry/live/changes.py): one
-- entry per change of a listed job; 'u' is its uuid16 (the states leave the id out); 'o' (the
-- state before) lets filtered watchers tell when a job leaves their selection.
for _, j in ipairs(ok) do
  local rec, state, h = KEYS[records + j], ARGV[4 * j + 2], handle[j]
  local version = tostring(tonumber(version_of[j] or '0') + 1)
  if not h then
    redis.call('HSET', rec, 's', state, 'v', version)
  elseif listed_before[j] then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'm', 'h', h, 'u', ARGV[4 * j + 3], 's', state,
      'o', old_state[j])
    redis.call('HSET', rec, 's', state, 'v', version)
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'a', 'h', h, 'u', ARGV[4 * j + 3], 's', state)
    redis.call('HSET', rec, 's', state, 'v', version, 'h', h)
  end
  result[j] = h or 0
end
result[n + 1] = elapsed_us()
return result
