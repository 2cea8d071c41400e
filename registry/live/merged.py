"""One watch over every partition's change log (issue 14): the partitions' watches merged, resumable from one
position, a vector of the partitions' positions.

Each partition keeps its own change log (its apply script writes it, in its slot); a ``Watch`` per
partition follows one log without gaps or duplicates. Merged, the stream delivers every partition's
changes in that partition's log order; across partitions, in the order they were read (there is no
global order of changes: each partition applies on its own). An event's id is the vector of the
positions delivered so far, one per partition (``<ms>-<seq>`` joined by ``_``, partition order), so
a client resuming with it (Last-Event-ID) gets, in each partition, exactly the changes after its
entry: no gap, no duplicate. With one partition the id is that partition's position, as always.
A job's creation_order in an event is the global one (handle * P + i).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import msgspec

from registry.live.changes import Change, Position, format_position, parse_position
from registry.live.watch import Bookmark, Kind, Watch, WatchEvent
from registry.query.merge import creation_order

SEPARATOR = "_"


def format_vector(positions: Sequence[Position]) -> str:
    """The partitions' positions as one resume id (one partition: its position, as on one registry)."""
    return SEPARATOR.join(format_position(p) for p in positions)


def parse_vector(text: str, partitions: int) -> list[Position] | None:
    """A resume id of ``partitions`` positions; None when malformed or of another partition count."""
    parts = text.split(SEPARATOR)
    if len(parts) != partitions:
        return None
    positions = [parse_position(p) for p in parts]
    return None if any(p is None for p in positions) else [p for p in positions if p is not None]


class PartitionChange:
    """A partition's change as the merged stream sends it: its id is the vector after it, its job
    carries the global creation_order."""

    __slots__ = ("_json", "change", "id", "partition", "partitions")

    def __init__(self, change: Change, vector_id: str, partition: int, partitions: int) -> None:
        self.change = change
        self.id = vector_id
        self.partition = partition
        self.partitions = partitions
        self._json: bytes | None = None

    @property
    def job_json(self) -> bytes:
        if self._json is None:
            job = self.change.job
            order = creation_order(job.creation_order, self.partitions, self.partition)
            self._json = msgspec.json.encode(msgspec.structs.replace(job, creation_order=order))
        return self._json


@dataclass(frozen=True, slots=True)
class MergedEvent:
    kind: Kind
    change: PartitionChange


@dataclass(frozen=True, slots=True)
class VectorBookmark:
    """Nothing more for this watcher up to these positions: resuming from ``id`` loses nothing."""

    positions: tuple[Position, ...]

    @property
    def id(self) -> str:
        return format_vector(self.positions)


_Item = tuple[int, list[WatchEvent] | Bookmark | BaseException | None]


class MergedWatch:
    """The watches of every partition (``watches[i]`` follows partition i), as one stream."""

    def __init__(self, watches: Sequence[Watch]) -> None:
        self.watches = list(watches)
        self.positions: list[Position] = [(0, 0)] * len(self.watches)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def id(self) -> str:
        """Where a client resumes from now."""
        return format_vector(self.positions)

    async def open(self, after: Sequence[Position] | None) -> None:
        """Open every partition's watch (after its entry of ``after``, or from now); ResumeGone if one's
        position is older than its log keeps."""
        try:
            for i, w in enumerate(self.watches):
                await w.open(None if after is None else after[i])
                self.positions[i] = w.position
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for w in self.watches:
            w.close()

    def stop(self) -> None:
        for w in self.watches:
            w.stop()

    async def batches(self) -> AsyncIterator[list[MergedEvent] | VectorBookmark]:
        """Every partition's events as they come (a batch from one partition at a time, its events
        ided by the vector after each), and a bookmark when a partition's watch gives one."""
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=len(self.watches))

        async def pump(i: int, w: Watch) -> None:
            try:
                async for item in w.batches():
                    await queue.put((i, item))
                await queue.put((i, None))
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the reader, which raises it
                await queue.put((i, exc))

        self._tasks = [asyncio.create_task(pump(i, w)) for i, w in enumerate(self.watches)]
        running = len(self._tasks)
        try:
            while running:
                i, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif isinstance(item, Bookmark):
                    self.positions[i] = max(self.positions[i], item.position)
                    yield VectorBookmark(tuple(self.positions))
                else:
                    yield self._events(i, item)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _events(self, i: int, batch: list[WatchEvent]) -> list[MergedEvent]:
        out = []
        count = len(self.watches)
        for event in batch:
            self.positions[i] = event.change.position
            out.append(MergedEvent(event.kind, PartitionChange(event.change, self.id, i, count)))
        # Not the watch's own position: its pump may already have read the next batch (still queued).
        return out
