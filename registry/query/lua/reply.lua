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

-- A record's key: the prefix, then the uuid's canonical text (lower case, with dashes), in one
-- format call of six numbers (a byte at a time, or splicing the dashes in, costs far more).
-- PICK's ids driver finds its jobs' handles through it too.
local function record_key(prefix, u)
  local a1, a2, a3, a4, b1, b2, c1, c2, d1, d2, e1, e2, f1, f2, f3, f4 = string.byte(u, 1, 16)
  return string.format('%s%08x-%04x-%04x-%04x-%04x%08x', prefix, ((a1 * 256 + a2) * 256 + a3) * 256 + a4,
    b1 * 256 + b2, c1 * 256 + c2, d1 * 256 + d2, e1 * 256 + e2, ((f1 * 256 + f2) * 256 + f3) * 256 + f4)
end

-- Append to out the handle and encoded state of each item's job record (fields 'h' and 's',
-- registry/store/record.py), two values per item (false for a missing record), as RECORDS does.
local function append_records(out, items, prefix)
  local n = #out
  for j, item in ipairs(items) do
    local got = redis.call('HMGET', record_key(prefix, item), 'h', 's')
    out[n + 2 * j - 1], out[n + 2 * j] = got[1], got[2]
  end
  return out
end
