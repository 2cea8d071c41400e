"""The projection writer: applies events to job records and every index, atomically and idempotently."""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from registry import lua
from registry.domain.fold import fold
from registry.domain.model import Event, JobState
from registry.keys import Keys
from registry.store import layout, record, resp
from registry.store.fresh import FreshRuns
from registry.store.indexes import MEMBER_FIELDS, ZONE_FIELDS, index_ops, row_of, sort_ops
from registry.store.ops import FlipBits, KeyTable, Op, encode_ops

# Apply calls are cut by an estimated cost, in units: a job costs JOB_COST (record check and
# write, change log, sort sets, zone maps) plus one per op it still sends per job (a bit flip
# counts one; a fresh job sends only sort, zone and member ops); each index key a call writes
# costs KEY_COST. What a unit costs in time depends on the machine and its load, so each call
# reports how long it held Redis (apply.lua's last reply element, from TIME) and the projection
# keeps an estimate of microseconds per unit: calls are sized to a time budget (``call_us``), so
# a query never queues behind one for long, and several travel in one pipeline so throughput
# does not suffer. US_PER_COST is the first guess, before anything was measured (about what a
# unit costs on an idle 2-core machine).
US_PER_COST = 1.0
JOB_COST = 12
FRESH_COST = len(ZONE_FIELDS) + len(MEMBER_FIELDS)
KEY_COST = 1
# Bounds of the measured budget. A call has fixed costs (about one command per index key it
# writes: a fresh job alone sets bits in some 60 bitmaps), so below about eight fresh jobs a call
# costs nearly as much as a larger one and throughput collapses: on a machine so busy that even
# that takes over the time budget, calls stay at the floor and the backlog waits in the stream.
MIN_BUDGET = 300
MAX_BUDGET = 20_000
# The estimate is the median rate of the last RATE_WINDOW calls: it follows a sustained change
# within a few batches, while one call stretched by the OS (Redis descheduled mid-script) does
# not shrink the calls after it, which would only cost throughput.
RATE_WINDOW = 31


def apply_script() -> str:
    """lua/apply.lua as run: its shebang, the sort-index library (lua/sortlib.lua), its body."""
    return lua.script("registry.store", "apply", ("sortlib",))


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
    calls: int = 0  # apply script calls run


class Projection:
    """Writes folded job states to Redis; one instance per process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        set_to_bitmap_threshold: int = 2048,
        chunk: int = 256,
        change_log_retention: int = 100_000,
        call_budget: int | None = None,
        call_us: int = 500,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.threshold = set_to_bitmap_threshold
        self.chunk = chunk  # jobs per apply call at most
        # A fixed cost budget per call (tests), or None: sized from measured durations to call_us.
        self.fixed_budget = call_budget
        self.call_us = call_us
        self.us_per_cost = US_PER_COST  # the estimate, refined by every call
        self._rates: deque[float] = deque(maxlen=RATE_WINDOW)
        self.durations: list[int] = []  # microseconds of recent calls, as Redis measured them
        self.change_log_retention = change_log_retention
        self._sha: str | None = None

    @property
    def call_budget(self) -> int:
        """The cost one apply call may reach: fixed, or what fits ``call_us`` at the measured rate."""
        if self.fixed_budget is not None:
            return self.fixed_budget
        # (a call can report 0 us: TIME counts whole microseconds)
        return int(min(MAX_BUDGET, max(MIN_BUDGET, self.call_us / max(self.us_per_cost, 0.001))))

    def _measured(self, cost: int, elapsed_us: int) -> None:
        """Fold one call's measured duration into the microseconds-per-unit estimate."""
        if len(self.durations) >= 10_000:
            del self.durations[:5_000]
        self.durations.append(elapsed_us)
        if cost > 0:
            self._rates.append(elapsed_us / cost)
            self.us_per_cost = statistics.median(self._rates)

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
            replies = await self._run(writes, result)
            todo = [w.job_id for w, h in zip(writes, replies, strict=True) if h < 0]
            result.changed += len(writes) - len(todo)
            # -1: that job's record moved; -2: another job's did, so the call wrote nothing.
            result.conflicts += sum(1 for h in replies if h == -1)
        raise RuntimeError(f"could not apply events to {len(todo)} jobs after {max_attempts} attempts")

    def _calls(self, writes: Sequence[_Write]) -> Iterator[tuple[bytes, int]]:
        """Each apply call for ``writes``, in order, packed, with its cost; cut at ``chunk`` jobs or ``call_budget``."""
        budget = self.call_budget
        call = _Call(self.keys)
        for w in writes:
            call.add(w)
            if len(call.records) >= self.chunk or call.cost >= budget:
                yield call.pack(self._sha_bytes, self.threshold, self.change_log_retention), call.cost
                call = _Call(self.keys)
        if call.records:
            yield call.pack(self._sha_bytes, self.threshold, self.change_log_retention), call.cost

    async def _run(self, writes: Sequence[_Write], result: ApplyResult) -> list[int]:
        """Apply calls of bounded cost (short, so other clients never wait long), pipelined on one connection.

        Each call is sent as soon as it is built, so Redis runs one while Python builds the next;
        the replies are read at the end. One connection, so jobs get their handles
        (creation_order) in the order their events were read.
        """
        if not writes:
            return []
        if self._sha is None:
            # A registry's first write stamps its layout version (a no-op on any other): whatever
            # writes first, a worker, a test or the benchmark's loader, the data says what it is.
            await layout.read(self.redis, self.keys)
            self._sha = await self.redis.script_load(apply_script())
        calls: Iterable[tuple[bytes, int]] = self._calls(writes)
        for attempt in (1, 2):
            sent, replies = await self._send_all(calls)
            result.calls += len(sent)
            errors = [r for r in replies if isinstance(r, Exception)]
            if not errors:
                handles: list[int] = []
                for (_, cost), reply in zip(sent, replies, strict=True):
                    *per_job, elapsed = reply
                    self._measured(cost, int(elapsed))
                    handles += per_job
                return handles
            if attempt == 2 or not all(isinstance(e, NoScriptError) for e in errors):
                raise errors[0]
            # Redis restarted or flushed its script cache (the SHA is the script's, so the
            # packed calls stay valid). Calls that did run are not applied twice: their
            # version check fails and the caller folds again.
            self._sha = await self.redis.script_load(apply_script())
            calls = sent
        raise AssertionError("unreachable")

    @property
    def _sha_bytes(self) -> bytes:
        assert self._sha is not None
        return self._sha.encode() if isinstance(self._sha, str) else self._sha

    async def _send_all(self, calls: Iterable[tuple[bytes, int]]) -> tuple[list[tuple[bytes, int]], list[Any]]:
        """Send every call on one connection as it is built, then read every reply (an error reply as its exception)."""
        sent: list[tuple[bytes, int]] = []

        def packed() -> Iterator[bytes]:
            for call in calls:
                sent.append(call)
                yield call[0]

        _, replies = await resp.stream(self.redis, packed())
        return sent, replies


class _Call:
    """One apply call being built: its key table, records, per-job ARGV and fresh jobs' runs, and its cost."""

    # False sends every job's whole diff as ops, fresh ones included: what the column-wise writer
    # must be equivalent to (tests compare the two, key by key).
    columnwise = True

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.table = KeyTable([keys.seq, keys.uuids, keys.changes])
        self.records: list[str] = []
        self.jobs: list[str | int | bytes] = []
        self.fresh = FreshRuns(keys, self.table)
        self.job_cost = 0

    @property
    def cost(self) -> int:
        return self.job_cost + KEY_COST * (len(self.table.names) + self.fresh.pending_keys)

    def add(self, w: _Write) -> None:
        new_row = row_of(w.new)
        old_row = row_of(w.old) if w.old else None
        ops: list[Op]
        if old_row is None and new_row is not None and self.columnwise:
            # Listed now: everything but its sort-set members travels column-wise with the call's
            # other fresh jobs (registry/store/fresh.py); a fresh job's zone and member writes
            # cost about one unit each, as their ops did.
            self.fresh.add(new_row)
            ops = sort_ops(self.keys, self.table, None, new_row)
            self.job_cost += FRESH_COST
        else:
            if old_row is None and new_row is not None:
                self.fresh.per_job += 1
            ops = index_ops(self.keys, self.table, old_row, new_row)
        self.records.append(self.keys.job(w.job_id))
        self.jobs += [w.version, record.encode_state(w.new), new_row.uuid16 if new_row else b"", encode_ops(ops)]
        self.job_cost += JOB_COST + sum(len(op.flips) if type(op) is FlipBits else 1 for op in ops)

    def keys_and_args(self, threshold: int, retention: int) -> tuple[list[str], list[str | int | bytes]]:
        """KEYS (fixed keys, index keys, then the records: ops number keys before the call's length
        is known) and ARGV, as lua/apply.lua's header documents them."""
        header, blob = self.fresh.encode()
        return [*self.table.names, *self.records], [threshold, retention, header, blob, *self.jobs]

    def pack(self, sha: bytes, threshold: int, retention: int) -> bytes:
        """The call as one EVALSHA in RESP, ready to send."""
        keys, args = self.keys_and_args(threshold, retention)
        return resp.pack_command(b"EVALSHA", sha, len(keys), *keys, *args)
