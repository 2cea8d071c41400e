"""The projection writer: applies events to job records and every index, atomically and idempotently."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from registry.domain.fold import fold
from registry.domain.model import Event, JobState
from registry.keys import Keys
from registry.lua import source
from registry.store import layout, record
from registry.store.indexes import index_ops, row_of
from registry.store.ops import KeyTable, Op, encode_ops


@dataclass(frozen=True, slots=True)
class _Write:
    """One job to write: its record's version as read, its state then, and its state now."""

    job_id: str
    version: str
    old: JobState | None
    new: JobState


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
        return await record.versions_and_states(self.redis, self.keys, job_ids)

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
            writes: list[_Write] = []
            for job_id in todo:
                version, old = current[job_id]
                new = fold(job_id, by_job[job_id], old)
                if new == old:
                    result.unchanged += 1
                    continue
                writes.append(_Write(job_id, version, old, new))
            replies = await self._run(writes)
            todo = [w.job_id for w, h in zip(writes, replies, strict=True) if h < 0]
            result.changed += len(writes) - len(todo)
            result.conflicts += len(todo)
        raise RuntimeError(f"could not apply events to {len(todo)} jobs after {max_attempts} attempts")

    def _call(self, writes: Sequence[_Write]) -> tuple[list[str], list[str | int | bytes]]:
        """KEYS and ARGV of one call of lua/apply.lua (its header documents both)."""
        k = self.keys
        table = KeyTable([k.seq, k.uuids, k.changes, *[k.job(w.job_id) for w in writes]])
        args: list[str | int | bytes] = [self.threshold, self.change_log_retention]
        for w in writes:
            new_row = row_of(w.new)
            ops: list[Op] = index_ops(k, table, row_of(w.old) if w.old else None, new_row)
            args += [w.version, record.encode_state(w.new), new_row.uuid16 if new_row else b"", encode_ops(ops)]
        return table.names, args

    async def _run(self, writes: Sequence[_Write]) -> list[int]:
        """Apply calls of up to ``chunk`` jobs each (short, so other clients never wait long).

        One pipeline on one connection, so jobs get their handles (creation_order) in the
        order their events were read.
        """
        if not writes:
            return []
        if self._sha is None:
            # A registry's first write stamps its layout version (a no-op on any other): whatever
            # writes first, a worker, a test or the benchmark's loader, the data says what it is.
            await layout.read(self.redis, self.keys)
            self._sha = await self.redis.script_load(source("registry.store", "apply"))
        calls = [self._call(writes[i : i + self.chunk]) for i in range(0, len(writes), self.chunk)]
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
                self._sha = await self.redis.script_load(source("registry.store", "apply"))
                continue
            return [int(h) for reply in replies for h in reply]
        raise AssertionError("unreachable")
