"""The projection writer: applies events to job records and every index, atomically and idempotently."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from registry.domain.fold import fold
from registry.domain.model import Event, JobState
from registry.keys import Keys
from registry.store.indexes import Row, index_ops, row_of

_encode = msgspec.msgpack.Encoder().encode
_encode_json = msgspec.json.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(JobState).decode

# Several jobs per call. Each job is a compare-and-set on its record version: its new state,
# record and every index change, or nothing. KEYS: seq, uuids, change log, then one record per
# job. ARGV[1] = set->bitmap threshold, ARGV[2] = change-log retention, then four per job:
# expected version, state blob, uuid16
# ('' while the job is not listed) and its index ops as JSON (see registry.store.indexes.index_ops;
# decoded by cjson in C, far cheaper than parsing in Lua). Every key an op names lives in the
# records' {prefix} slot. Returns per job: -1 when its version moved (the caller folds again),
# else its handle (0 while not listed).
APPLY_LUA = """
local threshold = tonumber(ARGV[1])
local result = {}
for j = 1, #KEYS - 3 do
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
    -- >>> change log (registry/live/changes.py): one entry per change of a listed job, in the same
    -- atomic step as the change itself; 'o' (the state before) lets filtered watchers tell
    -- when a job leaves their selection.
    if h then
      if listed_before then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'm', 'h', h, 's', ARGV[a + 1],
          'o', redis.call('HGET', rec, 's'))
      else
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'k', 'a', 'h', h, 's', ARGV[a + 1])
      end
    end
    -- <<< change log
    redis.call('HSET', rec, 's', ARGV[a + 1], 'v', tostring(tonumber(v or '0') + 1))
    if not h then
      result[j] = 0
    else
      h = tonumber(h)
      local member = uuid .. string.char(math.floor(h / 16777216) % 256, math.floor(h / 65536) % 256,
        math.floor(h / 256) % 256, h % 256)
      for _, op in ipairs(cjson.decode(ARGV[a + 3])) do
        local kind, key = op[1], op[2]
        if kind == 'B' then
          redis.call('SETBIT', key, h, op[3])
        elseif kind == 'S' then
          for _, flip in ipairs(op[3]) do
            if flip > 0 then
              redis.call('SETBIT', key .. (flip - 1), h, 1)
            else
              redis.call('SETBIT', key .. (-flip - 1), h, 0)
            end
          end
        elseif kind == 'Z' then
          redis.call('ZADD', key, op[3], member)
        elseif kind == 'z' then
          redis.call('ZREM', key, member)
        elseif kind == 'C' then
          redis.call('BITFIELD', key, 'SET', 'i64', '#' .. h, op[3])
        elseif kind == 'Q' then
          local block, v = '#' .. math.floor(h / op[5]), tonumber(op[3])
          if v > redis.call('BITFIELD', key, 'GET', 'i64', block)[1] then
            redis.call('BITFIELD', key, 'SET', 'i64', block, op[3])
          end
          local low = redis.call('BITFIELD', op[6], 'GET', 'i64', block)[1]
          if low == 0 or v + 1 < low then redis.call('BITFIELD', op[6], 'SET', 'i64', block, op[4]) end
        elseif kind == 'M' then
          local bitmap = op[3]
          if op[4] == 1 then
            if redis.call('EXISTS', bitmap) == 1 then
              redis.call('SETBIT', bitmap, h, 1)
            else
              redis.call('SADD', key, h)
              if redis.call('SCARD', key) > threshold then
                for _, m in ipairs(redis.call('SMEMBERS', key)) do redis.call('SETBIT', bitmap, m, 1) end
                redis.call('DEL', key)
              end
            end
          elseif redis.call('EXISTS', bitmap) == 1 then
            redis.call('SETBIT', bitmap, h, 0)
          else
            redis.call('SREM', key, h)
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
"""


@dataclass
class ApplyResult:
    changed: int = 0  # jobs whose state changed
    unchanged: int = 0  # jobs the events left as they were (redelivery, duplicates)
    conflicts: int = 0  # compare-and-set retries caused by concurrent workers


class Projection:
    """Writes folded job states to Redis; one instance per process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        set_to_bitmap_threshold: int = 2048,
        chunk: int = 32,
        change_log_retention: int = 100_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.threshold = set_to_bitmap_threshold
        self.chunk = chunk
        self.change_log_retention = change_log_retention
        self._sha: str | None = None

    async def load(self, job_ids: Sequence[str]) -> dict[str, tuple[str, JobState | None]]:
        """Current (version, state) of each job; version '' means no record yet."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), ["v", "s"])
        out: dict[str, tuple[str, JobState | None]] = {}
        for job_id, (v, s) in zip(job_ids, await pipe.execute(), strict=True):
            out[job_id] = ((v or b"").decode(), _decode_state(s) if s else None)
        return out

    async def apply(self, events: Sequence[Event], max_attempts: int = 20) -> ApplyResult:
        """Fold ``events`` into their jobs' records and indexes. Safe to repeat: re-applying changes nothing."""
        by_job: dict[str, list[Event]] = defaultdict(list)
        for event in events:
            by_job[event.job_id].append(event)
        result = ApplyResult()
        todo = list(by_job)
        for _ in range(max_attempts):
            if not todo:
                return result
            current = await self.load(todo)
            payloads: list[tuple[str, list[str | bytes]]] = []
            for job_id in todo:
                version, old = current[job_id]
                new = fold(job_id, by_job[job_id], old)
                if new == old:
                    result.unchanged += 1
                    continue
                payloads.append((job_id, self._payload(version, old, new)))
            replies = await self._run(payloads)
            todo = [job_id for (job_id, _), h in zip(payloads, replies, strict=True) if h < 0]
            result.changed += len(payloads) - len(todo)
            result.conflicts += len(todo)
        raise RuntimeError(f"could not apply events to {len(todo)} jobs after {max_attempts} attempts")

    def _payload(self, version: str, old: JobState | None, new: JobState) -> list[str | bytes]:
        old_row: Row | None = row_of(old) if old else None
        new_row = row_of(new)
        ops = index_ops(self.keys, old_row, new_row)
        return [version, _encode(new), new_row.uuid16 if new_row else b"", _encode_json(ops)]

    async def _run(self, payloads: list[tuple[str, list[str | bytes]]]) -> list[int]:
        """Apply calls of up to ``chunk`` jobs each (short, so other clients never wait long).

        One pipeline on one connection, so jobs get their handles (creation_order) in the
        order their events were read.
        """
        if not payloads:
            return []
        if self._sha is None:
            self._sha = await self.redis.script_load(APPLY_LUA)
        calls = []
        for i in range(0, len(payloads), self.chunk):
            part = payloads[i : i + self.chunk]
            keys = [self.keys.seq, self.keys.uuids, self.keys.changes, *[self.keys.job(job_id) for job_id, _ in part]]
            args = [self.threshold, self.change_log_retention, *[arg for _, job_args in part for arg in job_args]]
            calls.append((keys, args))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self._sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            try:
                replies = await pipe.execute()
            except NoScriptError:
                # Redis restarted or flushed its script cache. Calls that did run are not
                # applied twice: their version check fails and the caller folds again.
                if attempt == 2:
                    raise
                self._sha = await self.redis.script_load(APPLY_LUA)
                continue
            return [int(h) for reply in replies for h in reply]
        raise AssertionError("unreachable")
