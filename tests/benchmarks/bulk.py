"""Bulk loading for large benchmarks: what the apply path writes for new jobs, written column-wise.

Loading through the Projection folds and applies ~2.7 events per job through the apply script:
about 5,000 jobs/s here, half an hour per 10M jobs. This writes the same keys with the same
contents for jobs that arrive already complete, in order, into an empty registry (as the
benchmark's loader applies them: a job's events together, jobs in creation order, so job ``i``
gets handle ``i + 1`` and record version 1):

- each job's state is computed by the production code (``decode_event`` of its wire events,
  ``fold``, ``row_of``, the record codec), so what is stored cannot drift from what a worker
  would store;
- the indexes are built a chunk of handles at a time with numpy and written as whole ranges:
  one SETRANGE per bitmap, bit slice, value column and zone map per chunk (bitmaps end at their
  last set bit, as the apply script's writes leave them), sort indexes collected over the load
  (numpy arrays of scores and members) and bulk-built at the end, sorted, by the migration's
  builder (registry/store/sortidx.py), member indexes as sets up to the threshold and bitmaps
  past it, records by HSET and the handle -> uuid array by SETRANGE, all pipelined;
- the change log gets the entries of the last ``change_log_retention`` jobs (the apply path
  writes one per job and trims the older ones).

:func:`tests.integration.test_bulk_load` checks it key by key against the real apply path (sort
indexes by their entries in order: inserts and a bulk build cut them into different buckets);
a change to what the projection stores (``LAYOUT`` in registry/store/indexes.py) fails there
until this follows.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import struct
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import redis
from numpy.typing import NDArray
from tqdm import tqdm

from registry.live import changes
from tests.benchmarks.datagen import Job, Plan, iter_jobs, job_events

if TYPE_CHECKING:
    from registry.keys import Keys
    from registry.store.indexes import Row

#: Handles per chunk: a multiple of 8 (bitmaps by whole bytes) and of the zone size (1024).
CHUNK = 1 << 16


@dataclass
class _Chunk:
    """Handles ``first .. first + CHUNK - 1`` (slot 0 of the first chunk is handle 0, never used)."""

    first: int
    handles: list[int] = field(default_factory=list)
    uuid16: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    states: list[bytes] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


def _trimmed(data: bytes) -> bytes:
    """``data`` up to its last non-zero byte: the apply script's bit writes never extend a bitmap further."""
    return data.rstrip(b"\0")


class BulkLoader:
    """Writes complete jobs, in creation order, into an empty registry under ``prefix``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        threshold: int,
        retention: int,
        chunk: int = CHUNK,
        processes: int | None = None,
        keys: Keys | None = None,
    ) -> None:
        from registry.keys import Keys
        from registry.store import indexes

        # ``keys``: one partition's (registry/partition.py) instead of the one-partition registry's.
        self.url, self.r, self.ix = url, redis.Redis.from_url(url), indexes
        self.keys = keys or Keys(prefix)
        self.threshold, self.retention = threshold, retention
        assert chunk % indexes.ZONE_SIZE == 0 and chunk % 8 == 0
        self.chunk = chunk
        self.processes = processes or max(1, len(os.sched_getaffinity(0)))
        self.members: dict[tuple[str, str], list[int]] = defaultdict(list)
        # Per sort field, the chunks' (scores, members) of the jobs that have a score.
        self.sorted: dict[str, list[tuple[NDArray[np.int64], NDArray[np.bytes_]]]] = defaultdict(list)
        self.loaded = 0
        self._tail: list[tuple[int, bytes, bytes]] = []
        self._chunk = _Chunk(first=0)
        self._bar: tqdm[None] | None = None

    # -- per job: the production fold and codec

    # -- per chunk: column-wise index writes

    def _columns(self, chunk: _Chunk) -> dict[str, NDArray[np.int64]]:
        """Each value column and zone field of the chunk's rows, by slot (handle - first)."""
        n = len(chunk.rows)
        out = {name: np.zeros(self.chunk, dtype=np.int64) for name in self.ix.COLUMNS}
        offset = chunk.handles[0] - chunk.first
        for name in self.ix.COLUMNS:
            out[name][offset : offset + n] = [self.ix.column_value(row, name) for row in chunk.rows]
        return out

    def _write_chunk(self, pipe: redis.client.Pipeline, chunk: _Chunk) -> None:  # noqa: C901  one family per block
        ix, keys = self.ix, self.keys
        rows = chunk.rows
        slots = np.asarray(chunk.handles, dtype=np.int64) - chunk.first
        byte0 = chunk.first // 8

        def bitmap(key: str, mask: NDArray[np.bool_]) -> None:
            bits = np.zeros(self.chunk, dtype=np.uint8)
            bits[slots[mask]] = 1
            data = _trimmed(np.packbits(bits).tobytes())
            if data:
                pipe.setrange(key, byte0, data)

        # Plain bitmaps (what registry/store/indexes.py's _bitmaps sets for a listed job).
        status = np.array([r.status for r in rows], dtype=object)
        origin = np.array([r.origin for r in rows], dtype=object)
        hexes = np.array([ix.first_hex(r.uuid16) for r in rows], dtype=object)
        bitmap(keys.all, np.ones(len(rows), dtype=bool))
        for s, key in keys.status.items():
            bitmap(key, status == s)
        for o, key in keys.origin.items():
            bitmap(key, origin == o)
        for d, key in keys.id_hex.items():
            bitmap(key, hexes == d)
        bitmap(keys.errors, np.array([r.has_errors for r in rows], dtype=bool))
        bitmap(keys.started, np.array([r.start_timestamp is not None for r in rows], dtype=bool))
        bitmap(keys.ended, np.array([r.end_timestamp is not None for r in rows], dtype=bool))
        # Bit slices.
        sliced = {
            "runs": np.array([r.runs for r in rows], dtype=np.int64),
            "created": np.array([r.created_at // ix.SECOND_US for r in rows], dtype=np.int64),
            "start": np.array([(r.start_timestamp or 0) // ix.SECOND_US for r in rows], dtype=np.int64),
            "end": np.array([(r.end_timestamp or 0) // ix.SECOND_US for r in rows], dtype=np.int64),
        }
        for name, width in ix.BSI_WIDTH.items():
            for bit, key in enumerate(keys.slices(name, width)):
                bitmap(key, ((sliced[name] >> bit) & 1).astype(bool))
        # Value columns: big-endian i64 at 8 * handle, written for every listed job.
        columns = self._columns(chunk)
        lo, hi = int(slots[0]), int(slots[-1]) + 1
        for name, values in columns.items():
            pipe.setrange(keys.column(name), (chunk.first + lo) * 8, values[lo:hi].astype(">i8").tobytes())
        # Zone maps: per block, the largest value and the smallest plus one, of the jobs that have one.
        for name in ix.ZONE_FIELDS:
            values = columns[name] - (1 if name in ix.NULLABLE_COLUMNS else 0)
            present = np.zeros(self.chunk, dtype=bool)
            present[slots] = [ix.sort_score(r, name) is not None for r in rows]
            blocks = values.reshape(-1, ix.ZONE_SIZE)
            has = present.reshape(-1, ix.ZONE_SIZE)
            high = np.where(has, blocks, np.iinfo(np.int64).min).max(axis=1)
            low = np.where(has, blocks, np.iinfo(np.int64).max).min(axis=1)
            any_value = has.any(axis=1)
            high = np.where(any_value, high, 0)
            low = np.where(any_value, low + 1, 0)
            block0 = chunk.first // ix.ZONE_SIZE
            for key, data in ((keys.zone_max(name), high), (keys.zone_min(name), low)):
                raw = data.astype(">i8").tobytes()
                # Blocks are written whole (8 bytes) by the script: trim to the last written block.
                last = int(np.flatnonzero(any_value)[-1]) + 1 if any_value.any() else 0
                if last:
                    pipe.setrange(key, block0 * 8, raw[: last * 8])
        # Sort indexes: member = uuid16 + handle (4 bytes, big-endian); built at the end.
        members = [u + struct.pack(">I", h) for u, h in zip(chunk.uuid16, chunk.handles, strict=True)]
        for name in ix.SORT_FIELDS:
            scored = [
                (s, m) for m, row in zip(members, rows, strict=True) if (s := ix.sort_score(row, name)) is not None
            ]
            if scored:
                scores = np.array([s for s, _ in scored], dtype=np.int64)
                self.sorted[name].append((scores, np.array([m for _, m in scored], dtype="S20")))
        # Member indexes: collected over the whole load, written at the end (set or bitmap by final size).
        for row, h in zip(rows, chunk.handles, strict=True):
            self.members[("project", row.project_id)].append(h)
            self.members[("batch", row.batch_id)].append(h)
            self.members[("user", row.user_id)].append(h)
        # Records and the handle -> uuid array.
        pipe.setrange(keys.uuids, chunk.handles[0] * 16, b"".join(chunk.uuid16))
        for job_id, state, h in zip(chunk.ids, chunk.states, chunk.handles, strict=True):
            pipe.hset(keys.job(job_id), mapping={"s": state, "v": "1", "h": h})

    def _write_members(self, pipe: redis.client.Pipeline) -> None:
        for (kind, value), handles in self.members.items():
            if len(handles) > self.threshold:
                bits = np.zeros(max(handles) + 1, dtype=np.uint8)
                bits[handles] = 1
                pipe.set(self.keys.member_bitmap(kind, value), np.packbits(bits).tobytes())
            else:
                pipe.sadd(self.keys.member_set(kind, value), *handles)

    def _write_sort_indexes(self) -> None:
        """Each sort index, bulk-built from its entries in (score, member) order, a page per pipeline."""
        from registry.store import sortidx

        for name, parts in self.sorted.items():
            scores = np.concatenate([s for s, _ in parts])
            members = np.concatenate([m for _, m in parts])
            # 'S20' sorts as bytes (every member is 20 bytes); numpy drops a member's trailing NUL
            # bytes when it hands it back, so they are padded back on.
            ranked = np.lexsort((members, scores))
            builder = sortidx.Builder(self.keys.sort(name))
            per_page = sortidx.FILL * sortidx.FILL
            for i in range(0, len(ranked), per_page):
                at = ranked[i : i + per_page]
                entries = [
                    (m.ljust(20, b"\0"), int(s)) for m, s in zip(members[at].tolist(), scores[at].tolist(), strict=True)
                ]
                pipe = self.r.pipeline(transaction=False)
                for cmd in builder.page(entries):
                    pipe.execute_command(*cmd)
                pipe.execute()
        self.sorted.clear()

    def _write_change_log(self, pipe: redis.client.Pipeline, tail: Sequence[tuple[int, bytes, bytes]]) -> None:
        # The fields apply.lua writes for an added job, named where registry/live/changes.py reads them.
        for h, uuid16, state in tail:
            fields = {changes.KIND: changes.ADDED, changes.HANDLE: h, changes.UUID: uuid16, changes.STATE: state}
            pipe.xadd(self.keys.changes, fields, maxlen=self.retention, approximate=True)  # type: ignore[arg-type]

    def load(self, plan: Plan, bar: tqdm[None] | None = None) -> int:
        """Write every job of ``plan``; the number written."""
        self.start(bar)
        for prepared in _prepared_in_parallel(plan, self.processes):
            for job_id, state, row in prepared:
                self.add(job_id, state, row)
        return self.finish()

    def start(self, bar: tqdm[None] | None = None) -> None:
        """Stamp the empty registry's layout; jobs follow by ``add``, then ``finish``."""
        asyncio.run(_stamp_layout(self.url, self.keys))
        self._bar = bar

    def add(self, job_id: str, state: bytes, row: Row) -> None:
        """One more job (the next handle), written with its chunk."""
        chunk = self._chunk
        self.loaded += 1
        chunk.handles.append(self.loaded)
        chunk.ids.append(job_id)
        chunk.uuid16.append(row.uuid16)
        chunk.states.append(state)
        chunk.rows.append(row)
        if self.loaded + 1 == chunk.first + self.chunk:
            self._flush(chunk, self._tail)
            if self._bar is not None:
                self._bar.update(len(chunk.handles))
            self._chunk = _Chunk(first=chunk.first + self.chunk)

    def finish(self) -> int:
        """Write the last chunk, the sort and member indexes, the change log and the handle counter."""
        chunk = self._chunk
        if chunk.handles:
            self._flush(chunk, self._tail)
            if self._bar is not None:
                self._bar.update(len(chunk.handles))
        self._write_sort_indexes()
        pipe = self.r.pipeline(transaction=False)
        self._write_members(pipe)
        self._write_change_log(pipe, self._tail)
        if self.loaded:
            pipe.set(self.keys.seq, self.loaded)
        pipe.execute()
        return self.loaded

    def _flush(self, chunk: _Chunk, tail: list[tuple[int, bytes, bytes]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        self._write_chunk(pipe, chunk)
        pipe.execute()
        tail.extend(zip(chunk.handles, chunk.uuid16, chunk.states, strict=True))
        del tail[: max(0, len(tail) - self.retention)]


async def _stamp_layout(url: str, keys: Keys) -> None:
    """Stamp an empty registry's layout, as the apply path's first call does (the same function)."""
    import redis.asyncio as aioredis

    from registry.store import layout

    client = aioredis.Redis.from_url(url)
    try:
        await layout.read(client, keys)
    finally:
        await client.aclose()


def _prepare(jobs: Sequence[Job]) -> list[tuple[str, bytes, Row]]:
    """Each job's id, stored state and index row, by the production code (wire decoding, fold, codec)."""
    from registry.domain.fold import fold
    from registry.store.indexes import row_of
    from registry.store.record import encode_state
    from registry.wire.events import decode_event

    out = []
    for job in jobs:
        events = [decode_event(f) for f in job_events(job)]  # type: ignore[arg-type]
        state = fold(events[0].job_id, events)
        row = row_of(state)
        assert row is not None, "every generated job has its created event"
        out.append((state.job_id, encode_state(state), row))
    return out


def _prepared_in_parallel(plan: Plan, processes: int) -> Iterator[list[tuple[str, bytes, Row]]]:
    """:func:`_prepare` of the plan's jobs, in order, by ``processes`` forked processes (a bounded window ahead)."""
    jobs = iter_jobs(plan, chunk_size=2000)
    if processes == 1:
        yield from map(_prepare, jobs)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        window: deque[Future[list[tuple[str, bytes, Row]]]] = deque()
        for chunk in jobs:
            window.append(pool.submit(_prepare, chunk))
            if len(window) >= 2 * processes:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def bulk_load(url: str, prefix: str, plan: Plan, threshold: int, retention: int) -> tuple[int, float]:
    """Load ``plan`` with a progress bar: (jobs, seconds)."""
    t0 = time.perf_counter()
    with tqdm(total=plan.n_jobs, unit="job", unit_scale=True, desc="jobreg bulk load") as bar:
        n = BulkLoader(url, prefix, threshold, retention).load(plan, bar)
    return n, time.perf_counter() - t0


def bulk_load_partitioned(
    url: str, prefix: str, plan: Plan, threshold: int, retention: int, partitions: int
) -> tuple[int, float]:
    """Load ``plan`` into ``partitions`` partitions (each job into Partitions.of its id, as the workers
    route it), with a progress bar: (jobs, seconds)."""
    from registry.partition import Partitions

    parts = Partitions(prefix, partitions)
    t0 = time.perf_counter()
    loaders = [BulkLoader(url, prefix, threshold, retention, keys=k) for k in parts.keys]
    with tqdm(total=plan.n_jobs, unit="job", unit_scale=True, desc=f"jobreg bulk load, P = {partitions}") as bar:
        for loader in loaders:
            loader.start()
        for prepared in _prepared_in_parallel(plan, loaders[0].processes):
            for job_id, state, row in prepared:
                loaders[parts.of(job_id)].add(job_id, state, row)
            bar.update(len(prepared))
        n = sum(loader.finish() for loader in loaders)
    return n, time.perf_counter() - t0
