-- Apply folded job states to their records and every index: per job, a compare-and-set on the
-- record's version (registry/store/record.py), so its state, record, change-log entry and index
-- changes all happen, or none do.
--
-- KEYS[1] seq (handle counter), KEYS[2] uuids (16 bytes per handle), KEYS[3] change log,
-- KEYS[4 .. 3 + n] the n jobs' records, then every index key the ops touch (see KeyTable in
-- registry/store/ops.py).
-- ARGV[1] set->bitmap threshold of member indexes, ARGV[2] change-log retention (MAXLEN ~),
-- then four per job j: ARGV[4j - 1] expected version ('' = no record yet), ARGV[4j] state blob,
-- ARGV[4j + 1] uuid16 ('' while the job is not listed), ARGV[4j + 2] its index ops as JSON
-- (registry/store/ops.py; each op names its keys by KEYS index, never the handle).
-- Returns per job: -1 when its version moved (the caller folds again), else its handle (0 while
-- not listed).
local threshold = tonumber(ARGV[1])
local result = {}
for j = 1, (#ARGV - 2) / 4 do
  local rec, a = KEYS[j + 3], 4 * j - 1
  local v = redis.call('HGET', rec, 'v')
  if (v or '') ~= ARGV[a] then
    result[j] = -1
  else
    local uuid = ARGV[a + 2]
    local h = redis.call('HGET', rec, 'h')
    local listed_before = h ~= false and h ~= nil
    if (not h) and uuid ~= '' then
      h = redis.call('INCR', KEYS[1])
      redis.call('SETRANGE', KEYS[2], h * 16, uuid)
      redis.call('HSET', rec, 'h', h)
    end
    -- Change log (fields defined and parsed in registry/live/changes.py): one entry per change
    -- of a listed job, in the same atomic step as the change itself; 'o' (the state before)
    -- lets filtered watchers tell when a job leaves their selection.
    if h then
      if listed_before then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'm', 'h', h, 's', ARGV[a + 1],
          'o', redis.call('HGET', rec, 's'))
      else
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'a', 'h', h, 's', ARGV[a + 1])
      end
    end
    redis.call('HSET', rec, 's', ARGV[a + 1], 'v', tostring(tonumber(v or '0') + 1))
    if not h then
      result[j] = 0
    else
      h = tonumber(h)
      -- Sort-set member: uuid16 then the handle as 4 big-endian bytes.
      local member = uuid .. string.char(math.floor(h / 16777216) % 256, math.floor(h / 65536) % 256,
        math.floor(h / 256) % 256, h % 256)
      for _, op in ipairs(cjson.decode(ARGV[a + 3])) do
        local kind = op[1]
        if kind == 'B' then -- SetBit: key, value
          redis.call('SETBIT', KEYS[op[2]], h, op[3])
        elseif kind == 'S' then -- FlipBits: flips
          for _, k in ipairs(op[2]) do
            if k > 0 then
              redis.call('SETBIT', KEYS[k], h, 1)
            else
              redis.call('SETBIT', KEYS[-k], h, 0)
            end
          end
        elseif kind == 'Z' then -- SortAdd: key, score
          redis.call('ZADD', KEYS[op[2]], op[3], member)
        elseif kind == 'z' then -- SortRemove: key
          redis.call('ZREM', KEYS[op[2]], member)
        elseif kind == 'C' then -- SetColumn: key, value
          redis.call('BITFIELD', KEYS[op[2]], 'SET', 'i64', '#' .. h, op[3])
        elseif kind == 'Q' then -- WidenZone: max_key, value, value_plus_one, block_size, min_key
          local high, low_key = KEYS[op[2]], KEYS[op[6]]
          local block, value = '#' .. math.floor(h / op[5]), tonumber(op[3])
          if value > redis.call('BITFIELD', high, 'GET', 'i64', block)[1] then
            redis.call('BITFIELD', high, 'SET', 'i64', block, op[3])
          end
          local low = redis.call('BITFIELD', low_key, 'GET', 'i64', block)[1]
          if low == 0 or value + 1 < low then redis.call('BITFIELD', low_key, 'SET', 'i64', block, op[4]) end
        elseif kind == 'M' then -- Member: set_key, bitmap_key, present
          local set, bitmap = KEYS[op[2]], KEYS[op[3]]
          if op[4] == 1 then
            if redis.call('EXISTS', bitmap) == 1 then
              redis.call('SETBIT', bitmap, h, 1)
            else
              redis.call('SADD', set, h)
              if redis.call('SCARD', set) > threshold then
                for _, m in ipairs(redis.call('SMEMBERS', set)) do redis.call('SETBIT', bitmap, m, 1) end
                redis.call('DEL', set)
              end
            end
          elseif redis.call('EXISTS', bitmap) == 1 then
            redis.call('SETBIT', bitmap, h, 0)
          else
            redis.call('SREM', set, h)
          end
        else
          return redis.error_reply('unknown apply op ' .. tostring(kind))
        end
      end
      result[j] = h
    end
  end
end
return result
