#!lua flags=no-writes
-- UUIDS: the uuids of some handles, concatenated (16 bytes each).
-- KEYS[1] the uuid array (16 bytes per handle)
-- ARGV[1] handles, packed
local out = {}
for i, h in ipairs(handles(ARGV[1])) do out[i] = redis.call('GETRANGE', KEYS[1], h * 16, h * 16 + 15) end
return table.concat(out)
