#!lua
-- Dead-letter an entry and acknowledge it in one atomic step, only if it is still pending for the
-- group: an entry dead-lettered (or applied) by another worker meanwhile is not copied twice.
-- KEYS[1] events stream, KEYS[2] dead-letter stream, KEYS[3] failures hash, KEYS[4] failure counts hash.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] dead-letter MAXLEN (~), then field, value, ... of the copy.
-- Returns 1 when the entry was moved, 0 when it was no longer pending.
local unpack = unpack or table.unpack
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return 1
