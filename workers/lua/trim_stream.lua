#!lua flags=allow-oom
-- Trim the events stream below the first entry some consumer group still needs, and never past the
-- retention bound. Per group: its oldest pending entry, else the entry after its last-delivered-id;
-- everything below is delivered and acknowledged. Computed and applied in one atomic step, so a
-- group reading or joining meanwhile cannot be overtaken. `~` only drops whole stream nodes, never
-- an entry at or above the bound.
-- KEYS[1] events stream.
-- ARGV[1] now in ms ('' = Redis TIME), ARGV[2] retention ms, ARGV[3] XTRIM LIMIT.
-- Returns {entries removed, the bound used}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {0, ''} end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bound = string.format('%d-0', math.max(0, now - tonumber(ARGV[2])))
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local need
  if tonumber(info['pending']) > 0 then
    need = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    need = string.format('%d-%d', ms, seq + 1)
  end
  if less(need, bound) then bound = need end
end
return {redis.call('XTRIM', KEYS[1], 'MINID', '~', bound, 'LIMIT', ARGV[3]), bound}
