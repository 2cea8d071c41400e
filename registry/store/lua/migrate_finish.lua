#!lua
-- Finish `jobreg migrate` (registry/store/migrate.py): bump the layout version, but only once every
-- handle assigned so far has been migrated, in the same atomic step as that check, so no job a
-- worker listed during the migration is left behind.
--
-- KEYS[1] seq (handle counter), KEYS[2] the migration's progress hash ('next'), KEYS[3] the layout version.
-- ARGV[1] the layout migrated to.
-- Returns 1 when the version was bumped (and the progress hash removed), 0 when handles remain.
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local next_handle = tonumber(redis.call('HGET', KEYS[2], 'next') or '1')
if next_handle <= seq then return 0 end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
