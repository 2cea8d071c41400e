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

# Check candidate handles (ARGV[2..1+n]) against a predicate program and return, for each
# match, its sort member and score (false when null). KEYS[1] = uuids array, KEYS[2] = the
# sort set ('' score when creation_order). Program ops after the handles:
#   A n k...      bit set in any of n bitmaps      N k     bit clear
#   M n (s b)...  member of any set s or bitmap b  R z lo hi  score in [lo, hi]
CHECK = """
local n = tonumber(ARGV[1])
local prog_start = n + 2
local out = {}
for c = 2, n + 1 do
  local h = tonumber(ARGV[c])
  local uuid = redis.call('GETRANGE', KEYS[1], h * 16, h * 16 + 15)
  local ok = string.len(uuid) == 16
  local member = uuid .. string.char(math.floor(h / 16777216) % 256, math.floor(h / 65536) % 256,
    math.floor(h / 256) % 256, h % 256)
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
      local score = redis.call('ZSCORE', KEYS[tonumber(ARGV[i + 1])], member)
      ok = score ~= false and score ~= nil and tonumber(score) >= tonumber(ARGV[i + 2]) and tonumber(score) <= tonumber(ARGV[i + 3])
      i = i + 4
    end
  end
  if ok then
    out[#out + 1] = member
    if KEYS[2] ~= '' then
      out[#out + 1] = redis.call('ZSCORE', KEYS[2], member) or ''
    else
      out[#out + 1] = tostring(h)
    end
  end
end
return out
"""

# SETBIT KEYS[1] for each handle in ARGV, or for each member of the set KEYS[2] when no ARGV.
HANDLES_TO_BITMAP = """
local handles = ARGV
if #KEYS > 1 then handles = redis.call('SMEMBERS', KEYS[2]) end
for _, h in ipairs(handles) do redis.call('SETBIT', KEYS[1], h, 1) end
redis.call('PEXPIRE', KEYS[1], 60000)
return #handles
"""

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
