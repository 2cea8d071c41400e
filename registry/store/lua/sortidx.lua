#!lua
-- SORTIDX: one operation on a bucketed sort index (lua/sortlib.lua), for the migration, the bulk
-- loader's checks and tests; the query and apply scripts call the library's functions themselves.
-- KEYS[1] the index's top key (base..':t'; declared so the call runs in the index's slot)
-- ARGV[1] the index's base (Keys.sort), ARGV[2] the operation, then its arguments:
--   'add' (score member)...       add entries that are not in the index; returns how many were added
--   'rem' (score member)...       remove entries (score: the one stored); returns how many were removed
--   'move' (old score member)...  as APPLY writes: remove at the old score (none if ''), then add with
--                                 adds to the last bucket held back (sx_add_later); returns 0
--   'card'                        the number of entries
--   'range' rank count desc ws    count entries from rank on, in ascending or descending ('1') order;
--                                 with scores if ws is '1' (member, score pairs)
--   'below' score member          the number of entries before (score, member)
local base, op = ARGV[1], ARGV[2]
if op == 'add' or op == 'rem' then
  local f, done = op == 'add' and sx_add or sx_rem, 0
  for i = 3, #ARGV, 2 do
    done = done + f(base, ARGV[i], ARGV[i + 1])
  end
  sx_flush()
  return done
elseif op == 'move' then
  for i = 3, #ARGV, 3 do
    if ARGV[i] ~= '' then sx_rem(base, ARGV[i], ARGV[i + 2]) end
    sx_add_later(base, ARGV[i + 1], ARGV[i + 2])
  end
  sx_flush()
  return 0
elseif op == 'card' then
  return sx_card(base)
elseif op == 'range' then
  local c = sx_cursor(base, tonumber(ARGV[3]), ARGV[5] == '1')
  return sx_take(c, tonumber(ARGV[4]), ARGV[6] == '1', {})
elseif op == 'below' then
  return sx_below(base, tonumber(ARGV[3]), ARGV[4])
end
return redis.error_reply('SORTIDX: unknown operation ' .. tostring(op))
