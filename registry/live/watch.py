"""One watcher: every change after a position, in order, without gaps or duplicates, filtered by a JobQuery."""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from registry.keys import Keys
from registry.live.changes import Change, Position, format_position, read_after
from registry.live.feed import ChangeFeed, Overflow, Subscription
from registry.query.match import has_filters, matches
from registry.query.spec import JobQuery
from registry.route import Caller, as_caller


class Kind(enum.StrEnum):
    ADDED = "added"  # the job entered the watcher's selection (new job, or it now matches the filters)
    MODIFIED = "modified"  # it was in the selection and still is
    REMOVED = "removed"  # it was in the selection and no longer matches the filters (filtered watches only)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: Kind
    change: Change


@dataclass(frozen=True, slots=True)
class Bookmark:
    """Nothing for this watcher up to ``position``: resuming from it loses nothing."""

    position: Position

    @property
    def id(self) -> str:
        """The position as a stream's event id."""
        return format_position(self.position)


def classify(change: Change, query: JobQuery, filtered: bool) -> Kind | None:
    """What ``change`` means to a watcher of ``query``; None when the job is outside its selection throughout."""
    if not filtered:
        return Kind.ADDED if change.old is None else Kind.MODIFIED
    now = matches(change.state, query)
    before = change.old is not None and matches(change.old, query)
    if now:
        return Kind.MODIFIED if before else Kind.ADDED
    return Kind.REMOVED if before else None


class Watch:
    """Reads the log itself up to the shared feed's position, then follows the feed.

    The subscription is taken first, and holds every change after its ``start``; the
    watcher reads the log from its own position up to ``start`` (the catch-up), then
    takes changes from the subscription, skipping those at or before its position. A
    watcher whose buffer overflows subscribes again and catches up the same way.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        redis: aioredis.Redis | Caller,
        keys: Keys,
        query: JobQuery,
        *,
        heartbeat_s: float,
        buffer: int,
        chunk: int = 500,
        max_bytes: int | None = None,
    ) -> None:
        self.feed = feed
        # Runs the catch-up reads: a client, or on a cluster the partition's master at each read
        # (registry/route.py OnPartition), so a watch opened before a failover reads from the promoted replica.
        self.via = as_caller(redis)
        self.keys = keys
        self.query = query
        self.filtered = has_filters(query)
        self.heartbeat_s = heartbeat_s
        self.buffer = buffer
        self.chunk = chunk
        # Bounds what this watcher holds: its feed buffer (``max_bytes``), and each catch-up read
        # (a quarter of it: a read is held a few times over, as states, JSON and socket buffer),
        # whose count follows the size of the changes read so far, so big jobs come a few at a time.
        self.max_bytes = max_bytes
        self._read_bytes = None if max_bytes is None else max(1, max_bytes // 4)
        # Until sizes are known, a first read small enough for big jobs: 8 with the default bound (1 MiB),
        # down to 1 for a partition's share of it (api/live.py), since every partition reads at once.
        self._read_count = chunk if self._read_bytes is None else max(1, min(chunk, 8, self._read_bytes // 32768))
        self._stopping = False
        self.position: Position = (0, 0)
        self._sub: Subscription | None = None
        self._pending: list[Change] = []
        self._caught_up = False
        self.resubscribed = 0  # times this watcher overflowed its buffer and read the log itself

    @property
    def id(self) -> str:
        """Where a client resumes from now, as a stream's event id."""
        return format_position(self.position)

    async def open(self, after: Position | None) -> None:
        """Subscribe and read the first catch-up chunk, so a position outside the log fails here (ResumeGone)."""
        self._sub = await self.feed.subscribe(self.buffer, max_bytes=self.max_bytes)
        self.position = self._sub.start if after is None else after
        try:
            await self._catch_up_chunk()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sub is not None:
            self.feed.unsubscribe(self._sub)
            self._sub = None
        self._pending = []

    def stop(self) -> None:
        """End ``batches`` at its next step (the server is shutting down); a waiting watcher wakes now."""
        self._stopping = True
        if self._sub is not None:
            self._sub.tick()

    async def _catch_up_chunk(self) -> None:
        """Read the next chunk of the log between the watcher's position and the subscription's start."""
        assert self._sub is not None
        count = self._read_count
        after, until = self.position, self._sub.start
        got = await self.via(lambda client: read_after(client, self.keys, after, until, count))
        self._pending = got
        # A short chunk means everything up to the subscription's start has been read.
        self._caught_up = len(got) < count
        if self._read_bytes is not None and got:
            average = max(1, sum(c.size for c in got) // len(got))
            self._read_count = max(1, min(self.chunk, self._read_bytes // average))

    async def events(self) -> AsyncIterator[WatchEvent | Bookmark]:
        """Events one by one (see ``batches``)."""
        async for item in self.batches():
            if isinstance(item, Bookmark):
                yield item
            else:
                for event in item:
                    yield event

    async def batches(self) -> AsyncIterator[list[WatchEvent] | Bookmark]:  # noqa: C901  catch-up, feed and heartbeat are one ordered loop
        """Events for this watcher, in order, as they come (several at once when it is behind),
        with a Bookmark whenever ``heartbeat_s`` passed without output.

        Handing a late watcher everything pending in one go lets the server write it in one
        send: the busier the process, the bigger the batches, the fewer the writes.
        Raises ResumeGone if the watcher falls so far behind that the log was trimmed past it.
        """
        last_output = time.monotonic()
        while not self._stopping:
            assert self._sub is not None
            if self._pending:
                batch, self._pending = self._pending, []
            elif not self._caught_up:
                await self._catch_up_chunk()
                if self._caught_up and not self._pending:
                    self.position = max(self.position, self._sub.start)
                continue
            else:
                try:
                    batch = self._sub.take()
                except Overflow:
                    # Too slow for the in-memory buffer: subscribe again and read the log from here.
                    self.close()
                    self._sub = await self.feed.subscribe(self.buffer, max_bytes=self.max_bytes)
                    self._caught_up = False
                    self.resubscribed += 1
                    continue
                if not batch and time.monotonic() - last_output < self.heartbeat_s:
                    # Woken by the next change or the feed's tick (see ChangeFeed), not a timer
                    # per watcher: a timer per wait costs more than the event itself.
                    await self._sub.wait()
                    continue
            out: list[WatchEvent] = []
            for change in batch:
                if change.position <= self.position:
                    continue  # already delivered, or part of the list the client started from
                self.position = change.position
                kind = classify(change, self.query, self.filtered)
                if kind is not None:
                    out.append(WatchEvent(kind, change))
            if self._caught_up and not self._pending:
                # Past the last catch-up chunk, the position is at least the subscription's start.
                self.position = max(self.position, self._sub.start)
            if out:
                last_output = time.monotonic()
                yield out
            elif time.monotonic() - last_output >= self.heartbeat_s:
                last_output = time.monotonic()
                yield Bookmark(self.position)
