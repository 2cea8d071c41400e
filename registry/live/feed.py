"""The change feed: one blocking read of the change log per process, handed to every subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from registry.errors import StoreUnavailable
from registry.keys import Keys
from registry.live.changes import (
    Change,
    Position,
    ResumeGone,
    check_retained,
    current_position,
    decode_entries,
    format_position,
    log_info,
)

log = logging.getLogger("jobreg.feed")

MAX_BACKOFF_S = 5.0
# How long close() waits for the reader to end before it cancels it again (see close()).
CLOSE_RETRY_S = 0.1


class Overflow(Exception):
    """The subscriber fell too far behind the feed; it must read the log itself from its own position."""


class Subscription:
    """Changes after ``start``, as the feed reads them, buffered up to ``maxsize`` changes and
    ``max_bytes`` (their ``size``) for one watcher."""

    def __init__(self, start: Position, maxsize: int, max_bytes: int | None = None) -> None:
        self.start = start
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self._items: deque[Change] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._overflowed = False

    def push(self, changes: list[Change]) -> None:
        if self._overflowed:
            return
        size = sum(c.size for c in changes)
        if len(self._items) + len(changes) > self.maxsize or (
            # A batch alone above the bound is still taken by a watcher that has nothing
            # buffered: the bound is on what piles up, and a reader that keeps up never overflows.
            self.max_bytes is not None and self._items and self._bytes + size > self.max_bytes
        ):
            # Dropping the buffer (rather than blocking the feed) keeps one slow client from
            # slowing every other, and frees what it held; it catches up from Redis at its
            # own pace instead, never holding more than a bounded read.
            self._overflowed = True
            self._items.clear()
            self._bytes = 0
        else:
            self._items.extend(changes)
            self._bytes += size
        self._ready.set()

    def tick(self) -> None:
        """Wake the watcher with nothing new, so it can send a heartbeat when one is due."""
        self._ready.set()

    def overflow(self) -> None:
        self._overflowed = True
        self._items.clear()
        self._bytes = 0
        self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self) -> list[Change]:
        """Everything buffered so far (possibly nothing); raises Overflow if changes were dropped."""
        if self._overflowed:
            raise Overflow
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._ready.clear()
        return items


class ChangeFeed:
    """Reads the change log with XREAD BLOCK on its own connection and fans each batch out in memory.

    One reader per process, however many watchers: Redis sees one blocked client, and a
    change is decoded (and rendered) once. When a read times out with nothing new (or
    fails), every subscriber is ticked, which is what paces the watchers' heartbeats
    without a timer per watcher. A read that fails on the store drops the connection; the next
    one is built by the factory after ``locate`` (on a cluster: the partition's master now, after
    a failover or a reshard) and reads on from the feed's position (docs/scaling.md, "The watch
    across a failover and a reshard").
    """

    def __init__(
        self,
        redis_factory: Callable[[], aioredis.Redis],
        keys: Keys,
        *,
        block_ms: int = 1000,
        count: int = 1000,
        locate: Callable[[], Awaitable[object]] | None = None,
        partition: int = 0,
    ) -> None:
        # Called at each (re)connect: on a cluster it builds a client of the partition's master *then*
        # (api/app.py change_feeds), after ``locate`` (the route following a MOVED or a failover) found it.
        self._factory = redis_factory
        self._locate = locate
        self.keys = keys
        self.partition = partition
        self.block_ms = block_ms
        self.count = count
        self.position: Position | None = None
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._redis: aioredis.Redis | None = None
        self._closed = False
        self.reads = 0  # XREAD replies with at least one change
        self.reconnects = 0  # clients dropped after a failed read, and built again (on a cluster: at the master then)
        self.lost = 0  # reconnects that found the log behind the feed's position (changes lost in a failover)
        self.node = ""  # "host:port" the feed reads from (its last client's), for /metrics

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def subscribe(self, maxsize: int, start_timeout: float = 3.0, max_bytes: int | None = None) -> Subscription:
        """A subscription starting at the feed's current position (the feed starts on first use).

        Raises StoreUnavailable if the feed cannot learn its starting position in time, or is closed.
        """
        if self._closed:
            # A watch opened while the server shuts down: starting the reader now would outlive close().
            raise StoreUnavailable("the change feed is closed (the server is shutting down)")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jobreg-change-feed")
        try:
            await asyncio.wait_for(self._started.wait(), start_timeout)
        except TimeoutError:
            raise StoreUnavailable("the change feed cannot read the change log") from None
        assert self.position is not None
        # No await between reading the position and registering: nothing can be dispatched
        # in between, so the subscription holds exactly the changes after ``start``.
        sub = Subscription(self.position, maxsize, max_bytes)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    async def close(self) -> None:
        """End the reader and its connection.

        One cancel is not enough: Python 3.11's ``asyncio.wait_for`` (which redis-py sends each
        command under) drops a cancellation that lands just as the send completes, and the reader
        then went on reading forever, so the server's shutdown waited here forever (API processes
        left running after SIGTERM). The reader also stops at its next turn once closed.
        """
        self._closed = True
        task = self._task
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=CLOSE_RETRY_S)
        if self._redis is not None:
            await self._redis.aclose()

    async def _run(self) -> None:
        backoff = 0.0
        while not self._closed:
            try:
                redis = self._redis
                if redis is None:
                    redis = self._redis = self._connect()
                    if self.position is not None:
                        await self._check_log(redis)
                if self.position is None:
                    self.position = await current_position(redis, self.keys)
                    self._started.set()
                await self._step(redis)
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._tick_all()
                backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.1)
                store = isinstance(exc, RedisError | OSError)
                log.log(
                    logging.WARNING if store else logging.ERROR,
                    "change feed of partition %d read failed on %s (%s); retrying in %.1fs",
                    *(self.partition, self.node or "?", exc, backoff),
                )
                await asyncio.sleep(backoff)
                if store:
                    await self._reconnect()

    def _connect(self) -> aioredis.Redis:
        redis = self._factory()
        kwargs = redis.connection_pool.connection_kwargs
        self.node = f"{kwargs['host']}:{kwargs.get('port', 6379)}" if "host" in kwargs else str(kwargs.get("path", ""))
        return redis

    async def _reconnect(self) -> None:
        """Drop the client after a store error, and learn where the partition is served now: the next turn
        builds a client there (its master may have failed over, or its slot moved: MOVED) and reads on
        from the feed's position."""
        redis, self._redis = self._redis, None
        self.reconnects += 1
        if redis is not None:
            with contextlib.suppress(RedisError, OSError):
                await redis.aclose()
        if self._locate is not None:
            # Gives up (and is tried again after the next failed read) when no node answers for long.
            with contextlib.suppress(RedisError, OSError):
                await self._locate()

    async def _check_log(self, redis: aioredis.Redis) -> None:
        """After a reconnect: whether the log still reaches the feed's position. It does not when the
        server now serving it lost its last changes (a replica promoted before it had copied them:
        replication is asynchronous; or a server restarted without them). New changes may then get
        positions at or below ones already delivered, and a watcher that was sent the lost ones holds
        a resume point the log no longer has: every subscriber re-reads from its own position, where
        the retention check ends a watch that is ahead of the log (ResumeGone: list again), and the
        feed goes on from the log's end."""
        info = log_info(await _xinfo(redis, self.keys.changes))
        assert self.position is not None
        if info.last < self.position:
            log.warning(
                "the change log of partition %d ends at %s, before the feed's %s: changes were lost (failover?)",
                *(self.partition, format_position(info.last), format_position(self.position)),
            )
            self.lost += 1
            self.position = info.last
            for sub in self._subs:
                sub.overflow()

    async def _step(self, redis: aioredis.Redis) -> None:
        assert self.position is not None
        after = self.position
        reply = await redis.xread({self.keys.changes: format_position(after)}, count=self.count, block=self.block_ms)
        entries = reply[0][1] if reply else []
        if not entries:
            self._tick_all()
            return
        if len(entries) >= self.count:
            # A full batch may mean the feed fell behind far enough for the head to be trimmed
            # past it (a partial one cannot: retention keeps at least `count` newest entries).
            try:
                check_retained(log_info(await _xinfo(redis, self.keys.changes)), after)
            except ResumeGone:
                log.warning("change feed fell behind the log's retention; subscribers re-read on their own")
                for sub in self._subs:
                    sub.overflow()
        changes = decode_entries(entries)
        self.position = changes[-1].position
        self.reads += 1
        for sub in list(self._subs):
            sub.push(changes)

    def _tick_all(self) -> None:
        for sub in self._subs:
            sub.tick()


async def _xinfo(redis: aioredis.Redis, key: str) -> dict[str, Any] | Exception:
    try:
        info: dict[str, Any] = await redis.xinfo_stream(key)
        return info
    except RedisError as exc:
        return exc
