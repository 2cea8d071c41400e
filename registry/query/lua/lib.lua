-- Shared helpers, prepended to every query-path script (see registry/query/scripts.py).
-- No KEYS or ARGV of its own.

-- Handle of a sort-set member: its last four bytes, big-endian.
local function handle(m)
  local a, b, c, d = string.byte(m, -4, -1)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Handles packed in one argument, four big-endian bytes each (the writer is
-- scripts.pack_handles): a long argument list costs the client far more to encode and
-- send than one string.
local function handles(blob)
  local out = {}
  for k = 1, #blob, 4 do
    local a, b, c, d = string.byte(blob, k, k + 3)
    out[#out + 1] = ((a * 256 + b) * 256 + c) * 256 + d
  end
  return out
end
