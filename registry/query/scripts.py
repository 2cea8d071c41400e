"""Lua scripts of the query path; each does bounded work (a chunk) per call."""

from __future__ import annotations

# Handle of a sort-set member: its last four bytes, big-endian.
_HANDLE = """
local function handle(m)
  local a, b, c, d = string.byte(m, -4, -1)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
"""

# Walk a sort set by rank from ARGV[1], at most ARGV[2] entries, keeping members whose
# handle is set in every KEYS[2..1+ARGV[4]] and clear in the remaining keys; stop after
# ARGV[5] matches. Returns {next_rank, exhausted(0/1), member...}.
WALK = (
    _HANDLE
    + """
local start, chunk, desc, nreq, need = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1', tonumber(ARGV[4]), tonumber(ARGV[5])
local members
if desc then
  members = redis.call('ZREVRANGE', KEYS[1], start, start + chunk - 1)
else
  members = redis.call('ZRANGE', KEYS[1], start, start + chunk - 1)
end
local out = {0, 0}
local scanned = 0
for _, m in ipairs(members) do
  scanned = scanned + 1
  local h = handle(m)
  local ok = true
  for k = 2, #KEYS do
    local bit = redis.call('GETBIT', KEYS[k], h)
    if (k <= 1 + nreq and bit == 0) or (k > 1 + nreq and bit == 1) then ok = false break end
  end
  if ok then
    out[#out + 1] = m
    if #out - 2 >= need then break end
  end
end
out[1] = start + scanned
if #members < chunk and scanned == #members then out[2] = 1 end
return out
"""
)

# Handles travel packed, four big-endian bytes each, in one argument: a long argument list
# costs the client far more to encode and send than one string.
_HANDLES = """
local function handles(blob)
  local out = {}
  for k = 1, #blob, 4 do
    local a, b, c, d = string.byte(blob, k, k + 3)
    out[#out + 1] = ((a * 256 + b) * 256 + c) * 256 + d
  end
  return out
end
"""

# Check candidate handles (packed in ARGV[1]) against a predicate program; return, for each
# match, its handle, its order value (from the column KEYS[2]; the handle itself when KEYS[2]
# is '') and, when ARGV[2] is '1', its uuid (from the array KEYS[1]). Cheap bit tests run
# first and nothing is read for a job that fails them. Program ops from ARGV[3]:
#   A n k...      bit set in any of n bitmaps      N k             bit clear
#   M n (s b)...  member of any set s or bitmap b  R col lo hi nullable  column value in [lo, hi]
CHECK = (
    _HANDLES
    + """
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
"""
)

# The uuids of the handles packed in ARGV[1], concatenated (16 bytes each), from the array KEYS[1].
UUIDS = (
    _HANDLES
    + """
local out = {}
for i, h in ipairs(handles(ARGV[1])) do out[i] = redis.call('GETRANGE', KEYS[1], h * 16, h * 16 + 15) end
return table.concat(out)
"""
)

# Rank selection over a bit-sliced index, for deep offsets: which value range holds the
# (skip+1)-th job of the candidate bitmap in value order, found by counting instead of walking.
# KEYS[1] = candidates (consumed), KEYS[2] = scratch, KEYS[3] = the order's sort set,
# KEYS[4..] = slices from the highest bit down (ARGV[6..] = their bit numbers).
# ARGV: skip, desc, scale (sort-set units per BSI unit), stop (sort-set entries in the range
# small enough to walk), candidate count. Each step is one or two BITOPs, a BITCOUNT and a ZCOUNT.
# Returns {rank of the range's first entry in walk order, matches before it (above), done}.
SELECT = """
local skip, desc, scale, stop, count = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cand, scratch = KEYS[1], KEYS[2]
local above, prefix, low = 0, 0, 64
local function bounds()
  return string.format('%.0f', prefix * scale), string.format('%.0f', (prefix + 2 ^ low) * scale - 1)
end
for k = 4, #KEYS do
  local b = tonumber(ARGV[k + 2])
  redis.call('BITOP', 'AND', scratch, cand, KEYS[k])
  local ones = redis.call('BITCOUNT', scratch)
  local zeros = count - ones
  local first = desc and ones or zeros
  local take_ones
  if above + first > skip then
    take_ones = desc
  else
    above = above + first
    take_ones = not desc
  end
  if take_ones then
    cand, scratch = scratch, cand
    count = ones
    prefix = prefix + 2 ^ b
  else
    redis.call('BITOP', 'XOR', cand, cand, scratch)
    count = zeros
  end
  low = b
  local lo, hi = bounds()
  if redis.call('ZCOUNT', KEYS[3], lo, hi) <= stop then break end
end
local lo, hi = bounds()
local rank
if desc then
  rank = redis.call('ZCOUNT', KEYS[3], '(' .. hi, '+inf')
else
  rank = redis.call('ZCOUNT', KEYS[3], '-inf', '(' .. lo)
end
return {rank, above}
"""

# The handle and state of each record KEYS[i]: one call instead of a command per job.
RECORDS = """
local out = {}
for i, key in ipairs(KEYS) do
  local hs = redis.call('HMGET', key, 'h', 's')
  out[2 * i - 1], out[2 * i] = hs[1], hs[2]
end
return out
"""

# SETBIT KEYS[1] for each handle packed in ARGV[1].
HANDLES_TO_BITMAP = (
    _HANDLES
    + """
local list = handles(ARGV[1])
for _, h in ipairs(list) do redis.call('SETBIT', KEYS[1], h, 1) end
redis.call('PEXPIRE', KEYS[1], 60000)
return #list
"""
)

# SETBIT KEYS[1] for sort-set members of KEYS[2] in a lex (ARGV[1] = 'lex') or score range
# ARGV[2]..ARGV[3], ARGV[4] from offset, at most ARGV[5]. Returns how many were read.
RANGE_TO_BITMAP = (
    _HANDLE
    + """
local members
if ARGV[1] == 'lex' then
  members = redis.call('ZRANGEBYLEX', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', ARGV[4], ARGV[5])
else
  members = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], ARGV[3], 'LIMIT', ARGV[4], ARGV[5])
end
for _, m in ipairs(members) do redis.call('SETBIT', KEYS[1], handle(m), 1) end
redis.call('PEXPIRE', KEYS[1], 60000)
return #members
"""
)
