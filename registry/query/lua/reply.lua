-- The reply's tail shared by PAGE and PICK (prepended before them, see registry/query/scripts.py):
-- the change log's position and the page's job records, so a list query is one round trip.
-- No KEYS or ARGV of its own. A record's key is the record key prefix the caller passes
-- (registry/keys.py, Keys.job_prefix) followed by the job's uuid as text: the prefix carries the
-- hash tag of every declared key, so in a cluster the records are in the script's own slot.

-- The change log's position: the id of its last entry, '0-0' before the first (as
-- registry/live/changes.py current_position reads it). Read in the same atomic call as the
-- page, every change the page does not show is logged after it.
local function last_change(log)
  local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end

local UUID_HEX = string.rep('%02x', 16)
-- The canonical text of 16 uuid bytes (lower case, with dashes).
local function uuid_text(u)
  local x = string.format(UUID_HEX, string.byte(u, 1, 16))
  return string.sub(x, 1, 8) .. '-' .. string.sub(x, 9, 12) .. '-' .. string.sub(x, 13, 16) .. '-'
    .. string.sub(x, 17, 20) .. '-' .. string.sub(x, 21, 32)
end

-- Append to out the handle and encoded state of each item's job record (fields 'h' and 's',
-- registry/store/record.py), two values per item (false for a missing record), as RECORDS does.
local function append_records(out, items, prefix)
  local n = #out
  for j, item in ipairs(items) do
    local got = redis.call('HMGET', prefix .. uuid_text(item), 'h', 's')
    out[n + 2 * j - 1], out[n + 2 * j] = got[1], got[2]
  end
  return out
end
