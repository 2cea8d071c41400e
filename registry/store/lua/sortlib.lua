-- The bucketed sort index: one ordered set of (score, member) entries, kept as a B+tree of small
-- Redis keys so every piece stays a listpack (about 30 B per entry instead of a skiplist's ~120).
-- A fragment (no shebang, no KEYS/ARGV of its own), prepended to every script that reads or writes a
-- sort index (registry/lua.py; "registry.store:sortlib"). Its Python side, the key encoding and the
-- bulk builder, is registry/store/sortidx.py: a change here changes it there too.
--
-- An index is named by a base (registry/keys.py, Keys.sort); its keys, all under the base's
-- hash tag, are built here from it:
--   base..':t'        the top: a sorted set, every score 0, of page entries sep..id4
--   base..':tn'       hash: page id -> its entry count; field 'n' -> the index's entry count
--   base..':i'        counter of page and bucket ids
--   base..':p:'..id   a page: a sorted set, every score 0, of bucket entries sep..id4
--   base..':pn:'..id  hash: bucket id -> its entry count
--   base..':b:'..id   a bucket: a sorted set of at most SX_MAX of the index's (score, member) entries
-- A separator (sep) is the lowest key its node may hold: sx_key(score, member), order-preserving
-- bytes, so one ZREVRANGEBYLEX finds the node of any (score, member) with ties ordered by member
-- (job ids), as Redis orders a sorted set. The first node of each level has the separator '\0',
-- below every key. Members are fixed-length (SX_MEMBER), so no separator is a prefix of another.
-- Scores are integers of magnitude below 2^53 (exact in Lua numbers), passed as strings.
-- Nodes never reach SX_MAX + 1 entries: a zset that outgrows zset-max-listpack-entries (128) becomes
-- a skiplist for good (Redis never converts back), so a node is split in halves when it reaches SX_MAX,
-- and merged with (or refilled from) a sibling when it falls below SX_LOW.
local SX_MAX = 128
local SX_LOW = 32
local SX_MEMBER = 20 -- bytes in a member (uuid16 + handle, registry/keys.py Keys.sort)
local SX_TOP = '\255\255\255\255\255' -- after every id4 suffix: k..SX_TOP is above every entry sep..id4 with sep <= k

-- 4 big-endian bytes of the integer x (0 <= x < 2^32), without sx_be's table (a hot path: every
-- key and id; exact, as x - x % 256 is a multiple of 256).
local function sx_be4(x)
  local d = x % 256
  x = (x - d) / 256
  local c = x % 256
  x = (x - c) / 256
  local b = x % 256
  return string.char((x - b) / 256, b, c, d)
end

-- n big-endian bytes of the integer x (0 <= x < 2^53).
local function sx_be(x, n)
  if n == 4 then return sx_be4(x) end
  if n == 7 then
    local low = x % 4294967296
    return string.sub(sx_be4((x - low) / 4294967296), 2) .. sx_be4(low)
  end
  local t = {}
  for i = n, 1, -1 do
    t[i] = x % 256
    x = math.floor(x / 256)
  end
  return string.char(unpack(t))
end

-- The order-preserving key of (score, member): a sign byte, 7 bytes of magnitude, the member.
local function sx_key(score, member)
  if score >= 0 then return '\2' .. sx_be(score, 7) .. member end
  return '\1' .. sx_be(score + 9007199254740992, 7) .. member
end

-- (score, member) of a separator sx_key made; nil for the first node's '\0'.
local function sx_unkey(sep)
  if #sep < 8 then return nil end
  local sign, v = string.byte(sep, 1), 0
  for i = 2, 8 do
    v = v * 256 + string.byte(sep, i)
  end
  if sign == 1 then v = v - 9007199254740992 end
  return v, string.sub(sep, 9)
end

-- A directory entry's node id (its last four bytes) and separator (the rest).
local function sx_id(entry)
  local a, b, c, d = string.byte(entry, -4, -1)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function sx_sep(entry)
  return string.sub(entry, 1, -5)
end

-- Byte-wise a < b (Lua's own string comparison follows the server's collation locale).
local function sx_less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The entry of the directory node dir whose subtree holds key k (the greatest separator <= k).
-- An entry is sep..id4 and a separator is SX_MEMBER + 8 bytes: a key at least that long is cut to
-- it (a separator equal to the cut is below the longer key) and bounded by cut..SX_TOP, which takes
-- the entries of that separator too; a shorter probe (a member prefix, or '' for a bound before
-- every member of its score) is no separator, so k itself bounds them.
local function sx_child(dir, k)
  if #k >= SX_MEMBER + 8 then k = string.sub(k, 1, SX_MEMBER + 8) .. SX_TOP end
  return redis.call('ZREVRANGEBYLEX', dir, '[' .. k, '-', 'LIMIT', 0, 1)[1]
end

-- (page id, bucket id, page entry, bucket entry) of the bucket that holds key k; nil for an empty index.
local function sx_path(base, k)
  local pe = sx_child(base .. ':t', k)
  if not pe then return nil end
  local pid = sx_id(pe)
  local be = sx_child(base .. ':p:' .. pid, k)
  return pid, sx_id(be), pe, be
end

-- The index's last bucket as this call found it, per base: {page id, bucket id, separator}.
-- Arrivals come in created_at order (and mostly updated_at, start and end order), so most adds
-- land there: an add at or past its separator skips the two directory lookups. Forgotten whenever
-- this call restructures the index (a split, a merge, a refill), and with the call itself.
local sx_tails = {}
local function sx_tail(base)
  local t = sx_tails[base]
  if t == nil then
    t = false
    local pe = redis.call('ZRANGE', base .. ':t', -1, -1)[1]
    if pe then
      local pid = sx_id(pe)
      local be = redis.call('ZRANGE', base .. ':p:' .. pid, -1, -1)[1]
      t = {pid, sx_id(be), sx_sep(be)}
      t[4], t[5] = sx_unkey(t[3])
    end
    sx_tails[base] = t
  end
  return t
end

-- Count changes this call has not written yet: sx_pend[hash][field] = delta. An apply call adds a
-- run of arrivals to the same bucket, so its three counts (the bucket's, its page's, the index's
-- total) are written once per call, not once per entry. sx_known[hash][field] is the stored count as
-- read once in this call. Everything that reads counts or restructures the index flushes first.
local sx_pend, sx_known = {}, {}
local sx_flush_adds -- defined with sx_add_later below: adds held back, written before any count
local function sx_flush()
  sx_flush_adds()
  for key, fields in pairs(sx_pend) do
    for field, delta in pairs(fields) do
      if delta ~= 0 then redis.call('HINCRBY', key, field, delta) end
    end
  end
  sx_pend, sx_known = {}, {}
end
local function sx_incr(key, field, delta)
  local fields = sx_pend[key]
  if not fields then
    fields = {}
    sx_pend[key] = fields
  end
  fields[field] = (fields[field] or 0) + delta
end
-- A bucket's count as it stands in this call (stored, read once, plus what is pending).
local function sx_count_now(key, field)
  local known = sx_known[key]
  if not known then
    known = {}
    sx_known[key] = known
  end
  if known[field] == nil then known[field] = tonumber(redis.call('HGET', key, field) or 0) end
  local fields = sx_pend[key]
  return known[field] + (fields and fields[field] or 0)
end

-- A directory node read once per call: its entries in order, their ids, and per entry the count of
-- the index's entries under the node's earlier entries (cum) and its own (counts). Reads that seek
-- often in one call (SELECT's counts, a walk across pages) parse each node once; sx_add and sx_rem
-- forget them all, so a call that changes the index never reads stale counts.
local sx_dirs = {}
local sx_uses = {} -- how often this call counted in each directory (sx_before)
local function sx_dir(dir, counts_key)
  local d = sx_dirs[dir]
  if d == nil then
    sx_flush()
    local entries = redis.call('ZRANGE', dir, 0, -1)
    local ids, cum, counts, total = {}, {}, {}, 0
    for i, e in ipairs(entries) do
      ids[i] = sx_id(e)
    end
    if #ids > 0 then
      for i, n in ipairs(redis.call('HMGET', counts_key, unpack(ids))) do
        cum[i], counts[i] = total, tonumber(n)
        total = total + counts[i]
      end
    end
    d = {entries = entries, ids = ids, cum = cum, counts = counts, total = total}
    sx_dirs[dir] = d
  end
  return d
end

-- The first page and bucket of an index that has none.
local function sx_init(base)
  sx_flush()
  sx_tails[base] = nil
  local pid = redis.call('INCR', base .. ':i')
  local bid = redis.call('INCR', base .. ':i')
  redis.call('ZADD', base .. ':t', 0, '\0' .. sx_be(pid, 4))
  redis.call('HSET', base .. ':tn', pid, 0, 'n', 0)
  redis.call('ZADD', base .. ':p:' .. pid, 0, '\0' .. sx_be(bid, 4))
  redis.call('HSET', base .. ':pn:' .. pid, bid, 0)
  return pid, bid
end

-- The two levels differ in what a node's entries are and where their counts live:
-- level 'b': node = a bucket, entries = (score, member), node sizes in the page's count hash;
-- level 'p': node = a page, entries = bucket entries (each with its count in the page's hash),
--            node sizes = ZCARD, entry totals in the top's hash.
-- Move k entries of node src (its first ones if front, else its last) into node dst; returns
-- (the entries moved, in order, as read with WITHSCORES for buckets; the entry total moved).
local function sx_move(base, level, src, dst, k, front)
  local skey, dkey = base .. ':' .. level .. ':' .. src, base .. ':' .. level .. ':' .. dst
  local from, to = 0, k - 1
  if not front then from, to = -k, -1 end
  if level == 'b' then
    local got = redis.call('ZRANGE', skey, from, to, 'WITHSCORES')
    local args = {}
    for i = 1, #got, 2 do
      args[i], args[i + 1] = got[i + 1], got[i]
    end
    redis.call('ZADD', dkey, unpack(args))
    redis.call('ZREMRANGEBYRANK', skey, from, to)
    return got, k
  end
  local got = redis.call('ZRANGE', skey, from, to)
  local ids, zargs, hargs, total = {}, {}, {}, 0
  for i, e in ipairs(got) do
    ids[i] = sx_id(e)
    zargs[2 * i - 1], zargs[2 * i] = 0, e
  end
  local counts = redis.call('HMGET', base .. ':pn:' .. src, unpack(ids))
  for i, id in ipairs(ids) do
    hargs[2 * i - 1], hargs[2 * i] = id, counts[i]
    total = total + tonumber(counts[i])
  end
  redis.call('ZADD', dkey, unpack(zargs))
  redis.call('HSET', base .. ':pn:' .. dst, unpack(hargs))
  redis.call('ZREMRANGEBYRANK', skey, from, to)
  redis.call('HDEL', base .. ':pn:' .. src, unpack(ids))
  return got, total
end

-- The separator of the first entry in a list moved by sx_move.
local function sx_first_sep(level, got)
  if level == 'b' then return sx_key(tonumber(got[2]), got[1]) end
  return sx_sep(got[1])
end

-- The parent of a level's nodes: (its directory key, the hash of the nodes' entry totals).
local function sx_parent(base, level, pid)
  if level == 'b' then return base .. ':p:' .. pid, base .. ':pn:' .. pid end
  return base .. ':t', base .. ':tn'
end

-- Split node id (n entries) of a level in halves: the upper half moves to a new sibling.
local function sx_split(base, level, pid, id, n)
  sx_flush()
  sx_tails[base] = nil
  local dir, counts = sx_parent(base, level, pid)
  local new = redis.call('INCR', base .. ':i')
  local got, moved = sx_move(base, level, id, new, n - math.floor(n / 2), false)
  redis.call('ZADD', dir, 0, sx_first_sep(level, got) .. sx_be(new, 4))
  redis.call('HINCRBY', counts, id, -moved)
  redis.call('HSET', counts, new, moved)
  return new
end

-- The number of entries of node id of a level (a bucket's count, a page's bucket count).
local function sx_size(base, level, pid, id)
  if level == 'b' then return tonumber(redis.call('HGET', base .. ':pn:' .. pid, id)) end
  return redis.call('ZCARD', base .. ':p:' .. id)
end

-- Node id (entry e in its parent) fell below SX_LOW entries: merge it with a sibling when both fit
-- well below SX_MAX together, else even them out. Only a right-hand node's separator ever changes,
-- so the first node keeps '\0'. Returns true if the parent lost an entry.
local function sx_rebalance(base, level, pid, id, e)
  sx_flush()
  sx_tails[base] = nil
  local dir, counts = sx_parent(base, level, pid)
  local r = redis.call('ZRANK', dir, e)
  local sib = redis.call('ZRANGE', dir, math.max(r - 1, 0), r + 1)
  if #sib < 2 then return false end
  local le, re = e, sib[#sib] -- the right-hand sibling if there is one, else the left
  if sib[#sib] == e then le, re = sib[#sib - 1], e end
  local left, right = sx_id(le), sx_id(re)
  local nl, nr = sx_size(base, level, pid, left), sx_size(base, level, pid, right)
  if nl + nr <= SX_MAX - SX_LOW then
    if nr > 0 then
      local _, moved = sx_move(base, level, right, left, nr, true)
      redis.call('HINCRBY', counts, left, moved)
    end
    redis.call('ZREM', dir, re)
    redis.call('HDEL', counts, right)
    return true
  end
  local want = math.floor((nl + nr) / 2) -- the left node's size afterwards
  local got, moved
  if nl < want then
    got, moved = sx_move(base, level, right, left, want - nl, true)
    redis.call('HINCRBY', counts, left, moved)
    redis.call('HINCRBY', counts, right, -moved)
    -- the right node now starts at its first remaining entry
    if level == 'b' then
      got = redis.call('ZRANGE', base .. ':b:' .. right, 0, 0, 'WITHSCORES')
    else
      got = redis.call('ZRANGE', base .. ':p:' .. right, 0, 0)
    end
  else
    got, moved = sx_move(base, level, left, right, nl - want, false)
    redis.call('HINCRBY', counts, left, -moved)
    redis.call('HINCRBY', counts, right, moved)
  end
  redis.call('ZREM', dir, re)
  redis.call('ZADD', dir, 0, sx_first_sep(level, got) .. sx_be(right, 4))
  return false
end

-- Add (score, member); the member must not be in the index (remove it first to move it): 1 if
-- added, 0 if it was there (left as it was). score is a string (passed to ZADD as given).
local function sx_add(base, score, member)
  sx_dirs, sx_uses = {}, {}
  local k = sx_key(tonumber(score), member)
  local pid, bid
  local tail = sx_tail(base)
  if tail and not sx_less(k, tail[3]) then
    pid, bid = tail[1], tail[2]
  else
    pid, bid = sx_path(base, k)
    if not pid then pid, bid = sx_init(base) end
  end
  if redis.call('ZADD', base .. ':b:' .. bid, 'NX', score, member) == 0 then return 0 end
  local pn = base .. ':pn:' .. pid
  local n = sx_count_now(pn, bid) + 1
  sx_incr(base .. ':tn', 'n', 1)
  sx_incr(base .. ':tn', pid, 1)
  sx_incr(pn, bid, 1)
  if n >= SX_MAX then
    sx_split(base, 'b', pid, bid, n)
    local m = redis.call('ZCARD', base .. ':p:' .. pid)
    if m >= SX_MAX then sx_split(base, 'p', nil, pid, m) end
  end
  return 1
end

-- Adds held back per base, all for the index's last bucket: {pid, bid, n, args} with n the bucket's
-- count including them and args the ZADD's (score, member) pairs. An apply call adds a run of
-- arrivals to the last bucket of each index; one ZADD for the run instead of one per entry saves a
-- command's dispatch and the per-entry count bookkeeping (profile: command overhead and Lua, not the
-- listpack inserts, were most of the write path's cost). Written when the bucket is full (so it
-- never holds more than SX_MAX), before a removal from that bucket, and by every sx_flush (so
-- anything that reads counts or restructures the index sees them).
local sx_later = {}
local function sx_write_later(base, b)
  local added = redis.call('ZADD', base .. ':b:' .. b[2], 'NX', unpack(b[4]))
  local pn = base .. ':pn:' .. b[1]
  local n = sx_count_now(pn, b[2]) + added
  sx_incr(base .. ':tn', 'n', added)
  sx_incr(base .. ':tn', b[1], added)
  sx_incr(pn, b[2], added)
  if n >= SX_MAX then
    sx_split(base, 'b', b[1], b[2], n)
    local m = redis.call('ZCARD', base .. ':p:' .. b[1])
    if m >= SX_MAX then sx_split(base, 'p', nil, b[1], m) end
  end
end
sx_flush_adds = function()
  local base, b = next(sx_later)
  while base ~= nil do
    sx_later[base] = nil -- taken before writing: a split flushes again, and must not see it
    sx_write_later(base, b)
    base, b = next(sx_later)
  end
end

-- Add (score, member) as sx_add does, but an add to the index's last bucket may be written later
-- (with the next sx_flush at the latest); returns nothing (sx_add's 1 or 0 is not known yet).
local function sx_add_later(base, score, member)
  local tail = sx_tail(base)
  if not tail then
    sx_add(base, score, member)
    return
  end
  -- at or past the tail's separator, compared as numbers: no key to build (sx_key, sx_less ~1.6 us)
  local x = tonumber(score)
  if tail[4] ~= nil and (x < tail[4] or (x == tail[4] and sx_less(member, tail[5]))) then
    sx_add(base, score, member)
    return
  end
  sx_dirs, sx_uses = {}, {}
  local b = sx_later[base]
  if b == nil then
    b = {tail[1], tail[2], sx_count_now(base .. ':pn:' .. tail[1], tail[2]), {}}
    sx_later[base] = b
  end
  local args = b[4]
  args[#args + 1], args[#args + 2] = score, member
  b[3] = b[3] + 1
  if b[3] >= SX_MAX then
    sx_later[base] = nil
    sx_write_later(base, b)
  end
end

-- Remove member, stored with score (the score finds its bucket): 1 if removed, 0 if not there.
local function sx_rem(base, score, member)
  sx_dirs, sx_uses = {}, {}
  local pid, bid, pe, be = sx_path(base, sx_key(tonumber(score), member))
  if not pid then return 0 end
  local later = sx_later[base]
  if later and later[2] == bid then -- the member may be among them; the count must include them
    sx_later[base] = nil
    sx_write_later(base, later)
    pid, bid, pe, be = sx_path(base, sx_key(tonumber(score), member)) -- a split may have moved it
  end
  if redis.call('ZREM', base .. ':b:' .. bid, member) == 0 then return 0 end
  local pn = base .. ':pn:' .. pid
  local n = sx_count_now(pn, bid) - 1
  sx_incr(base .. ':tn', 'n', -1)
  sx_incr(base .. ':tn', pid, -1)
  sx_incr(pn, bid, -1)
  if n < SX_LOW then
    -- a bucket alone in its page has no sibling there: its page is then small too, and is rebalanced
    sx_rebalance(base, 'b', pid, bid, be)
    if redis.call('ZCARD', base .. ':p:' .. pid) < SX_LOW then sx_rebalance(base, 'p', nil, pid, pe) end
  end
  return 1
end

-- The number of entries.
local function sx_card(base)
  sx_flush()
  return tonumber(redis.call('HGET', base .. ':tn', 'n') or 0)
end

-- The count of the index's entries under the entries of directory dir before entry e. The first two
-- counts of a call (a range's two bounds) read only those entries' counts; a third reads the whole
-- directory once (sx_dir) and sums from it (SELECT counts a range a few dozen times per call).
local function sx_before(dir, counts_key, e)
  sx_flush()
  local r = redis.call('ZRANK', dir, e)
  if sx_dirs[dir] == nil and (sx_uses[dir] or 0) < 2 then
    sx_uses[dir] = (sx_uses[dir] or 0) + 1
    if r == 0 then return 0 end
    local ids, below = {}, 0
    for i, x in ipairs(redis.call('ZRANGE', dir, 0, r - 1)) do
      ids[i] = sx_id(x)
    end
    for _, n in ipairs(redis.call('HMGET', counts_key, unpack(ids))) do
      below = below + tonumber(n)
    end
    return below
  end
  return sx_dir(dir, counts_key).cum[r + 1]
end

-- The number of entries ordered before (score, member): member '' counts the scores below score,
-- a member above every member ('\255' x 21) counts those up to score. score is a number.
local function sx_below(base, score, member)
  local k = sx_key(score, member)
  local pid, bid, pe, be = sx_path(base, k)
  if not pid then return 0 end
  local below = sx_before(base .. ':t', base .. ':tn', pe)
  below = below + sx_before(base .. ':p:' .. pid, base .. ':pn:' .. pid, be)
  local bkey = base .. ':b:' .. bid
  local s = string.format('%.0f', score)
  below = below + redis.call('ZCOUNT', bkey, '-inf', '(' .. s)
  local ties = redis.call('ZCOUNT', bkey, s, s)
  if ties > 0 and ties == redis.call('ZCARD', bkey) then
    -- every entry has this score (the id index's are all 0): members compare in C
    return below + redis.call('ZLEXCOUNT', bkey, '-', '(' .. member)
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', bkey, s, s)) do
    if sx_less(m, member) then below = below + 1 end
  end
  return below
end

-- The index of the node holding the entry at offset r (0-based): the last whose cum is <= r.
local function sx_find(cum, r)
  local lo, hi = 1, #cum
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if cum[mid] <= r then lo = mid else hi = mid - 1 end
  end
  return lo
end

-- A cursor at the entry of rank `rank` in walk order (ascending, or descending if desc), read on
-- with sx_take. Fields: base, desc, done, top (the top's directory), pi, buckets, counts (of the
-- current page), bi, off (the next entry's ascending offset in the current bucket).
local function sx_load_page(c, pi)
  c.pi = pi
  local pid = c.top.ids[pi]
  local d = sx_dir(c.base .. ':p:' .. pid, c.base .. ':pn:' .. pid)
  c.buckets, c.counts, c.cum = d.ids, d.counts, d.cum
end

local function sx_cursor(base, rank, desc)
  local c = {base = base, desc = desc, done = true}
  local total = sx_card(base)
  if rank < 0 or rank >= total then return c end
  c.done = false
  local r = rank
  if desc then r = total - 1 - rank end
  c.top = sx_dir(base .. ':t', base .. ':tn')
  c.pages = c.top.ids
  local pi = sx_find(c.top.cum, r)
  sx_load_page(c, pi)
  r = r - c.top.cum[pi]
  local bi = sx_find(c.cum, r)
  -- skip empty buckets a binary search can land on (their cum equals the next one's)
  while bi <= #c.buckets and r >= c.cum[bi] + c.counts[bi] do bi = bi + 1 end
  if bi > #c.buckets then
    c.done = true -- counts disagree with the total: nothing to read
    return c
  end
  c.bi, c.off = bi, r - c.cum[bi]
  return c
end

-- Step the cursor to the next bucket in walk order that holds entries; done at the end.
local function sx_step(c)
  while true do
    if c.desc then c.bi = c.bi - 1 else c.bi = c.bi + 1 end
    if c.bi < 1 or c.bi > #c.buckets then
      local pi = c.desc and c.pi - 1 or c.pi + 1
      if pi < 1 or pi > #c.pages then
        c.done = true
        return
      end
      sx_load_page(c, pi)
      c.bi = c.desc and #c.buckets or 1
    end
    if c.counts[c.bi] > 0 then
      c.off = c.desc and c.counts[c.bi] - 1 or 0
      return
    end
  end
end

-- Up to n more entries from the cursor in walk order, appended to out (members, or member and
-- score pairs if withscores); returns out.
local function sx_take(c, n, withscores, out)
  local per = withscores and 2 or 1
  local goal = #out + n * per
  while not c.done and #out < goal do
    local bkey = c.base .. ':b:' .. c.buckets[c.bi]
    local cnt = c.counts[c.bi]
    local want = (goal - #out) / per
    local got
    if c.desc then
      local from = cnt - 1 - c.off
      if withscores then
        got = redis.call('ZREVRANGE', bkey, from, from + want - 1, 'WITHSCORES')
      else
        got = redis.call('ZREVRANGE', bkey, from, from + want - 1)
      end
      c.off = c.off - #got / per
      if c.off < 0 then sx_step(c) end
    else
      if withscores then
        got = redis.call('ZRANGE', bkey, c.off, c.off + want - 1, 'WITHSCORES')
      else
        got = redis.call('ZRANGE', bkey, c.off, c.off + want - 1)
      end
      c.off = c.off + #got / per
      if c.off >= cnt then sx_step(c) end
    end
    if #got == 0 then sx_step(c) end -- the bucket holds fewer than its count says: go on
    for _, x in ipairs(got) do
      out[#out + 1] = x
    end
  end
  return out
end

-- The entries of ascending ranks start .. stop (as ZRANGE; descending ranks if desc, as ZREVRANGE).
local function sx_range(base, start, stop, desc)
  if stop < start then return {} end
  return sx_take(sx_cursor(base, start, desc), stop - start + 1, false, {})
end

-- A member above every member (so (score, SX_AFTER) is after every entry of that score).
local SX_AFTER = string.rep('\255', SX_MEMBER + 1)

-- How many entries lie before a ZCOUNT-style score bound ('-inf', '+inf', 'x' or '(x'): before
-- the range it starts (lo) or up to its end (not lo).
local function sx_score_rank(base, bound, lo)
  if bound == '-inf' then return 0 end
  if bound == '+inf' then return sx_card(base) end
  local excl = string.sub(bound, 1, 1) == '('
  local x = tonumber(excl and string.sub(bound, 2) or bound)
  if x < -9007199254740991 then return 0 end
  if x > 9007199254740991 then return sx_card(base) end
  if lo == excl then return sx_below(base, x, SX_AFTER) end
  return sx_below(base, x, '')
end

-- ZCOUNT: the entries with a score within the bounds.
local function sx_count(base, lo, hi)
  return math.max(0, sx_score_rank(base, hi, false) - sx_score_rank(base, lo, true))
end

-- The same for a ZRANGEBYLEX-style bound ('-', '+', '[m' or '(m') over an index whose scores are
-- all 0 (the id index: members in id order).
local function sx_lex_rank(base, bound, lo)
  if bound == '-' then return 0 end
  if bound == '+' then return sx_card(base) end
  local m, excl = string.sub(bound, 2), string.sub(bound, 1, 1) == '('
  if lo == excl then return sx_below(base, 0, m .. '\0') end -- the entries up to m, m included
  return sx_below(base, 0, m)
end

-- ZLEXCOUNT.
local function sx_lexcount(base, lo, hi)
  return math.max(0, sx_lex_rank(base, hi, false) - sx_lex_rank(base, lo, true))
end

-- ZRANGEBYLEX (every member in the bounds, in order).
local function sx_rangebylex(base, lo, hi)
  return sx_range(base, sx_lex_rank(base, lo, true), sx_lex_rank(base, hi, false) - 1, false)
end
