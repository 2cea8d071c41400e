#!lua
-- Read a registry's number of partitions P, stamping it at its first start (registry/store/partitions.py).
--
-- KEYS[1] the stored P ({<prefix>}:partitions), KEYS[2] seq of the one-partition layout ({<prefix>}:seq:
-- present once a registry written before P was stored has listed a job). One slot: the prefix's tag.
-- ARGV[1] the P to stamp on a new registry.
-- Returns {P, how}: how is 'stored' (read), 'existing' (a registry of data without a stored P: it
-- is one partition, now stamped so) or 'new' (ARGV[1] stamped). Atomic, so two processes starting
-- together stamp once and agree.
local p = redis.call('GET', KEYS[1])
if p then
  return {p, 'stored'}
end
local how = 'new'
p = ARGV[1]
if redis.call('EXISTS', KEYS[2]) == 1 then
  p = '1'
  how = 'existing'
end
redis.call('SET', KEYS[1], p)
return {p, how}
