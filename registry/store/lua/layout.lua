#!lua
-- Read the stored layout's version, stamping this code's on an empty registry (registry/store/layout.py).
--
-- KEYS[1] the layout version, KEYS[2] seq (the handle counter: absent until a job is listed),
-- KEYS[3] `jobreg migrate`'s progress hash (fields 'to', 'next').
-- ARGV[1] the layout this code writes: stamped when neither a version nor any listed job exists,
-- atomically with that check, so a registry's first start never races a first write.
-- Returns {version ('' when absent), seq ('' when absent), migrating to ('' when no migration),
-- next handle to migrate ('' when none)}.
local version = redis.call('GET', KEYS[1])
local seq = redis.call('GET', KEYS[2])
if not version and not seq then
  redis.call('SET', KEYS[1], ARGV[1])
  version = ARGV[1]
end
local migration = redis.call('HMGET', KEYS[3], 'to', 'next')
return {version or '', seq or '', migration[1] or '', migration[2] or ''}
