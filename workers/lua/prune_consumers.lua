#!lua flags=allow-oom
-- Remove group members that hold no pending entry and have been idle long (default names are
-- host-pid, so every restart adds one). Atomic: a member that reads meanwhile is not removed, and a
-- member removed while alive is recreated by its next read.
-- KEYS[1] events stream.
-- ARGV[1] group, ARGV[2] idle ms, ARGV[3] a member name never removed ('' = none).
-- Returns how many members were removed.
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[2]) and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
