#!lua flags=no-writes
-- SORTREAD: a read of a bucketed sort index (registry/store/lua/sortlib.lua) with a sorted set's
-- semantics, for the query path's Python steps (registry/query/execute/).
-- KEYS[1] the index's base (Keys.sort; declared so the call runs in the index's slot)
-- ARGV[1] the read, then its arguments:
--   'range' start stop desc   members of ranks start..stop (ZRANGE, or ZREVRANGE if desc is '1')
--   'count' lo hi             entries with a score within ZCOUNT bounds
--   'lexcount' lo hi          ZLEXCOUNT (an index whose scores are all 0: the id index)
--   'rangebylex' lo hi        ZRANGEBYLEX, every member within the bounds
--   'below' score member ...  {all entries, then for each (score, member) the entries ordered before
--                             it}: ranks across partitions (registry/query/scatter.py); counts after
--                             the second of a call reuse the directories read (sortlib's sx_dir)
--   'rows' start count desc   {all entries, then member, score of each of count entries from rank start}
--   'at' rank desc            {member, score} of the entry at that rank (descending ranks if desc is '1'),
--                             {} past the last
local base, op = KEYS[1], ARGV[1]
if op == 'range' then
  return sx_range(base, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1')
elseif op == 'count' then
  return sx_count(base, ARGV[2], ARGV[3])
elseif op == 'lexcount' then
  return sx_lexcount(base, ARGV[2], ARGV[3])
elseif op == 'below' then
  local out = {sx_card(base)}
  for i = 2, #ARGV - 1, 2 do
    out[#out + 1] = sx_below(base, tonumber(ARGV[i]), ARGV[i + 1])
  end
  return out
elseif op == 'rows' then
  local out = {sx_card(base)}
  return sx_take(sx_cursor(base, tonumber(ARGV[2]), ARGV[4] == '1'), tonumber(ARGV[3]), true, out)
elseif op == 'at' then
  local rank = tonumber(ARGV[2])
  if rank >= sx_card(base) then return {} end
  return sx_take(sx_cursor(base, rank, ARGV[3] == '1'), 1, true, {})
elseif op == 'rangebylex' then
  return sx_rangebylex(base, ARGV[2], ARGV[3])
end
return redis.error_reply('SORTREAD: unknown read ' .. tostring(op))
