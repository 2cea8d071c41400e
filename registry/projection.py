"""The projection writer: applies events to job records and every index, atomically and idempotently."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from registry.fold import fold
from registry.indexes import Row, index_ops, row_of
from registry.keys import Keys
from registry.model import Event, JobState

_encode = msgspec.msgpack.Encoder().encode
_decode_state = msgspec.msgpack.Decoder(JobState).decode

# One job's new state, its record and all its index changes, or nothing: the version
# check makes it a compare-and-set, so concurrent workers never interleave on a job.
# KEYS: record, seq, uuids, change log, then every key the ops name. ARGV: expected version,
# state blob, uuid16, listed flag, set->bitmap threshold, change-log retention, then ops
# (opcode, key index, arg).
APPLY_LUA = """
local rec = KEYS[1]
local v = redis.call('HGET', rec, 'v')
if (v or '') ~= ARGV[1] then return {0, v or ''} end
local h = redis.call('HGET', rec, 'h')
local listed_before = h ~= false and h ~= nil
if (not h) and ARGV[4] == '1' then
  h = redis.call('INCR', KEYS[2])
  redis.call('SETRANGE', KEYS[3], h * 16, ARGV[3])
  redis.call('HSET', rec, 'h', h)
end
local newv = tostring(tonumber(v or '0') + 1)
-- >>> change log (registry/changes.py): one entry per change of a listed job, in the same
-- atomic step as the change itself; 'o' (the state before) lets filtered watchers tell
-- when a job leaves their selection.
if h then
  if listed_before then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'k', 'm', 'h', h, 's', ARGV[2],
      'o', redis.call('HGET', rec, 's'))
  else
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'k', 'a', 'h', h, 's', ARGV[2])
  end
end
-- <<< change log
redis.call('HSET', rec, 's', ARGV[2], 'v', newv)
if not h then return {1, 0} end
h = tonumber(h)
local member = ARGV[3] .. string.char(math.floor(h / 16777216) % 256, math.floor(h / 65536) % 256,
  math.floor(h / 256) % 256, h % 256)
local threshold = tonumber(ARGV[5])
local i = 7
while i <= #ARGV do
  local op, key, arg = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'B' then
    redis.call('SETBIT', key, h, tonumber(arg))
  elseif op == 'Z' then
    redis.call('ZADD', key, arg, member)
  elseif op == 'z' then
    redis.call('ZREM', key, member)
  elseif op == 'M' then
    local bitmap = KEYS[tonumber(ARGV[i + 3])]
    i = i + 1
    if arg == '1' then
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
  end
  i = i + 3
end
return {1, h}
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
        change_log_retention: int = 100_000,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.threshold = set_to_bitmap_threshold
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
        await self._ensure_script()
        todo = list(by_job)
        for _ in range(max_attempts):
            if not todo:
                return result
            current = await self.load(todo)
            pipe = self.redis.pipeline(transaction=False)
            sent: list[str] = []
            for job_id in todo:
                version, old = current[job_id]
                new = fold(job_id, by_job[job_id], old)
                if new == old:
                    result.unchanged += 1
                    continue
                self._queue(pipe, version, old, new)
                sent.append(job_id)
            replies = await self._run(pipe, sent, current, by_job) if sent else []
            todo = [job_id for job_id, (ok, _) in zip(sent, replies, strict=True) if not ok]
            result.changed += len(sent) - len(todo)
            result.conflicts += len(todo)
        raise RuntimeError(f"could not apply events to {len(todo)} jobs after {max_attempts} attempts")

    def _queue(self, pipe: aioredis.client.Pipeline, version: str, old: JobState | None, new: JobState) -> None:
        old_row: Row | None = row_of(old) if old else None
        new_row = row_of(new)
        keys = [self.keys.job(new.job_id), self.keys.seq, self.keys.uuids, self.keys.changes]
        index: dict[str, int] = {}

        def ref(key: str) -> int:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
            return index[key]

        raw = index_ops(self.keys, old_row, new_row)
        argv: list[str | bytes | int] = [
            version,
            _encode(new),
            # uuid16 is only read when the job is listed, i.e. when new_row exists.
            new_row.uuid16 if new_row else b"",
            1 if new_row else 0,
            self.threshold,
            self.change_log_retention,
        ]
        i = 0
        while i < len(raw):
            op = raw[i]
            if op == "M":
                argv += [op, ref(str(raw[i + 1])), raw[i + 3], ref(str(raw[i + 2]))]
                i += 4
            else:
                argv += [op, ref(str(raw[i + 1])), raw[i + 2]]
                i += 3
        assert self._sha is not None
        pipe.evalsha(self._sha, len(keys), *keys, *argv)  # type: ignore[arg-type]

    async def _ensure_script(self) -> None:
        if self._sha is None:
            self._sha = await self.redis.script_load(APPLY_LUA)

    async def _run(
        self,
        pipe: aioredis.client.Pipeline,
        sent: list[str],
        current: dict[str, tuple[str, JobState | None]],
        by_job: dict[str, list[Event]],
    ) -> list[tuple[bool, int]]:
        try:
            replies = await pipe.execute()
        except NoScriptError:
            # Redis restarted or flushed its script cache: load and redo the round.
            self._sha = None
            await self._ensure_script()
            pipe = self.redis.pipeline(transaction=False)
            for job_id in sent:
                version, old = current[job_id]
                self._queue(pipe, version, old, fold(job_id, by_job[job_id], old))
            replies = await pipe.execute()
        return [(bool(r[0]), int(r[1] or 0)) for r in replies]
