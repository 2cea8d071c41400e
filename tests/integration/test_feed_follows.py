"""A change feed whose server dies reconnects where its ``locate`` says the log is served now (a promoted replica,
on a cluster) and reads on from its position; one that finds that log behind it (changes lost with the old
server) makes its watchers re-read, which ends a watch ahead of the log (ResumeGone). Two real redis-servers
stand in for a master and its replica; tests/faults/test_cluster_watch.py runs the same on a real cluster."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.live.changes import ORIGIN, Position, ResumeGone, current_position
from registry.live.feed import ChangeFeed
from registry.live.watch import Watch, WatchEvent
from registry.query.spec import JobQuery
from registry.store.projection import Projection
from tests.conftest import RedisServer, start_redis_server
from tests.integration.test_api import decode_all
from tests.reference import make_traffic

T = TypeVar("T")


@pytest.fixture
def servers() -> Iterator[tuple[RedisServer, RedisServer]]:
    if shutil.which("redis-server") is None:
        pytest.skip("kills a server: needs redis-server")
    old, new = start_redis_server(), start_redis_server()
    yield old, new
    for server in (old, new):
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


class Moving:
    """Where the log is served: the old server until ``locate`` is called, then the new one (what a cluster
    route does after a failover). Also the watch's Caller, so its catch-up reads follow too."""

    def __init__(self, old: RedisServer, new: RedisServer) -> None:
        self.urls = [old.url, new.url]
        self.now = 0
        self.located = 0
        self.clients = [aioredis.Redis.from_url(u) for u in self.urls]

    def factory(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.urls[self.now])

    async def locate(self) -> None:
        self.located += 1
        self.now = 1

    async def __call__(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await fn(self.clients[self.now])

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


@contextlib.asynccontextmanager
async def _setup(
    servers: tuple[RedisServer, RedisServer], copied_but: int
) -> AsyncIterator[tuple[Moving, ChangeFeed, Watch, Keys, list[Position]]]:
    """Changes applied on the old server, its log copied to the new one (same ids) but the last ``copied_but``,
    a watch from the origin that has read every change of the old server."""
    old, new = servers
    keys = Keys(f"t{random.getrandbits(32):x}")
    moving = Moving(old, new)
    source = aioredis.Redis.from_url(old.url)
    await Projection(source, keys).apply(decode_all(make_traffic(random.Random(1), 30, dup_rate=0, bad_rate=0)))
    entries = await source.xrange(keys.changes)
    await source.aclose()
    replica = moving.clients[1]
    for entry_id, fields in entries[: len(entries) - copied_but]:
        await replica.xadd(keys.changes, fields, id=entry_id)  # type: ignore[arg-type]
    feed = ChangeFeed(moving.factory, keys, block_ms=100, locate=moving.locate)
    watch = Watch(feed, moving, keys, JobQuery(), heartbeat_s=60, buffer=1000)
    await watch.open(ORIGIN)
    old_positions = [(int(a), int(b)) for a, b in (e[0].decode().split("-") for e in entries)]
    got = await _read(watch, len(old_positions))
    assert got == old_positions
    try:
        yield moving, feed, watch, keys, old_positions
    finally:
        watch.close()
        await feed.close()
        await moving.aclose()


async def _read(watch: Watch, n: int) -> list[Position]:
    out: list[Position] = []
    async with asyncio.timeout(20):
        async for item in watch.events():
            if isinstance(item, WatchEvent):
                out.append(item.change.position)
                if len(out) == n:
                    return out
    raise AssertionError("the watch ended")


async def test_a_feed_reconnects_where_its_log_is_served_now_and_reads_on(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    async with _setup(servers, copied_but=0) as (moving, feed, watch, keys, before):
        servers[0].stop()  # kill -9 of the "master": its replica has every change
        new = moving.clients[1]
        await Projection(new, keys).apply(decode_all(make_traffic(random.Random(2), 20, dup_rate=0, bad_rate=0)))
        after = [(int(a), int(b)) for a, b in (e[0].decode().split("-") for e in await new.xrange(keys.changes))]
        fresh = after[len(before) :]
        assert fresh and after[: len(before)] == before
        # Every change logged on the new server after the old one's last, once, in order.
        assert await _read(watch, len(fresh)) == fresh
        assert moving.located >= 1 and feed.reconnects >= 1 and feed.lost == 0
        assert feed.node == f"127.0.0.1:{servers[1].port}"
        assert feed.position == await current_position(new, keys)


async def test_a_feed_that_finds_its_log_behind_it_ends_the_watches_ahead_of_the_log(
    servers: tuple[RedisServer, RedisServer],
) -> None:
    # The "replica" lacks the last 3 changes the watch was sent (asynchronous replication): the watch cannot
    # resume from its position there, and says so instead of waiting for changes that will never come.
    async with _setup(servers, copied_but=3) as (moving, feed, watch, _keys, _before):
        servers[0].stop()
        with pytest.raises(ResumeGone):
            await _read(watch, 1)
        assert feed.lost == 1 and moving.located >= 1
