"""The change log and watchers against a real Redis: atomic entries, retention, gapless fan-out, filters."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from api.live import _Session
from api.services import LiveMetrics
from registry.domain.model import Event, Status
from registry.errors import StoreUnavailable
from registry.keys import Keys
from registry.live.changes import (
    ORIGIN,
    Position,
    ResumeGone,
    current_position,
    decode_entries,
    parse_position,
    read_after,
)
from registry.live.feed import ChangeFeed
from registry.live.watch import Bookmark, Kind, Watch, WatchEvent
from registry.query.spec import JobQuery
from registry.settings import Settings
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.integration.test_api import decode_all
from tests.reference import make_traffic

JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"
BATCH = "11111111-1111-4111-8111-111111111111"
PROJECT = "22222222-2222-4222-8222-222222222222"


def ev(eid: str, etype: str, at: str, job: str = JOB, **fields: str) -> Event:
    raw = {"event_id": eid, "type": etype, "job_id": job, "occurred_at": f"2026-11-23T10:00:{at}Z", **fields}
    if etype == "created":
        raw.update(batch_id=BATCH, project_id=PROJECT, user_id="ann", runs="5")
    return decode_event(raw)


async def log(redis: aioredis.Redis, keys: Keys) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.changes)
    return entries


async def test_each_change_of_a_listed_job_is_logged_once(aredis: aioredis.Redis, keys: Keys) -> None:
    proj = Projection(aredis, keys)
    # Events before `created`: the job is not listed, so nothing is logged.
    await proj.apply([ev("s", "started", "05")])
    assert await log(aredis, keys) == []
    await proj.apply([ev("c", "created", "00")])
    await proj.apply([ev("f", "finished", "09")])
    entries = await log(aredis, keys)
    assert [f[b"k"] for _, f in entries] == [b"a", b"m"]
    first, second = decode_entries(entries)
    assert first.old is None and first.job.status is Status.RUNNING and first.job.creation_order == 1
    assert second.old == first.state and second.job.status is Status.DONE
    assert first.position < second.position
    # Redelivery changes nothing, so it logs nothing.
    await proj.apply([ev("s", "started", "05"), ev("c", "created", "00"), ev("f", "finished", "09")])
    assert len(await log(aredis, keys)) == 2
    assert await current_position(aredis, keys) == second.position


async def test_retention_trims_and_old_positions_are_gone(aredis: aioredis.Redis, keys: Keys) -> None:
    proj = Projection(aredis, keys, change_log_retention=100)
    events = decode_all(make_traffic(random.Random(2), 400, dup_rate=0, bad_rate=0))
    for i in range(0, len(events), 50):
        await proj.apply(events[i : i + 50])
    entries = await log(aredis, keys)
    # MAXLEN ~ trims whole radix-tree nodes (100 entries): between 100 and ~200 kept.
    assert 100 <= len(entries) <= 250
    info = await aredis.xinfo_stream(keys.changes)
    assert info["entries-added"] > len(entries)
    with pytest.raises(ResumeGone):
        await read_after(aredis, keys, ORIGIN, None, 10)
    first = decode_entries(entries[:1])[0].position
    got = await read_after(aredis, keys, first, None, 10_000)
    assert [c.id.encode() for c in got] == [entry_id for entry_id, _ in entries[1:]]


async def _collect(watch: Watch, until: Position, out: list[str], delay: float = 0.0) -> None:
    async for item in watch.events():
        if isinstance(item, WatchEvent):
            out.append(item.change.id)
            if delay:
                await asyncio.sleep(delay)
        if (item.change.position if isinstance(item, WatchEvent) else item.position) >= until:
            return


@pytest.fixture
async def feed(settings: Settings, keys: Keys) -> AsyncIterator[ChangeFeed]:
    f = ChangeFeed(lambda: aioredis.Redis.from_url(settings.redis_url), keys, block_ms=100, count=50)
    yield f
    await f.close()


async def test_watchers_get_every_change_in_order_under_load(
    aredis: aioredis.Redis, keys: Keys, feed: ChangeFeed
) -> None:
    proj = Projection(aredis, keys)
    events = decode_all(make_traffic(random.Random(3), 300, dup_rate=0.05, bad_rate=0))
    await proj.apply(events[:200])  # history before anyone watches
    middle = (await current_position(aredis, keys), 0)
    watchers = {
        # (resume point, buffer, catch-up chunk, per-event delay)
        "from-origin": (ORIGIN, 10_000, 500, 0.0),
        "from-now": (None, 10_000, 500, 0.0),
        "from-middle": (middle[0], 10_000, 7, 0.0),
        "slow-small-buffer": (ORIGIN, 5, 7, 0.001),  # overflows the feed buffer again and again
    }
    opened: dict[str, tuple[Watch, Position]] = {}
    for name, (after, buffer, chunk, _) in watchers.items():
        w = Watch(feed, aredis, keys, JobQuery(), heartbeat_s=60, buffer=buffer, chunk=chunk)
        await w.open(after)
        opened[name] = (w, w.position)

    async def write() -> None:
        for i in range(200, len(events), 17):
            await proj.apply(events[i : i + 17])
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    await writer
    final = await current_position(aredis, keys)
    got: dict[str, list[str]] = {name: [] for name in watchers}
    await asyncio.wait_for(
        asyncio.gather(*(_collect(w, final, got[n], watchers[n][3]) for n, (w, _) in opened.items())), 30
    )
    all_ids = [entry_id.decode() for entry_id, _ in await log(aredis, keys)]
    for name, (w, start) in opened.items():
        want = [i for i in all_ids if (parse_position(i) or ORIGIN) > start]
        assert got[name] == want, name
        w.close()
    assert opened["slow-small-buffer"][0].resubscribed > 0, "the overflow path was not exercised"
    assert opened["from-now"][0].resubscribed == 0
    assert feed.subscribers == 0


async def test_filtered_watch_sees_jobs_enter_and_leave(aredis: aioredis.Redis, keys: Keys, feed: ChangeFeed) -> None:
    proj = Projection(aredis, keys)
    w = Watch(feed, aredis, keys, JobQuery(statuses=(Status.RUNNING,)), heartbeat_s=60, buffer=100)
    await w.open(None)
    await proj.apply([ev("c", "created", "00")])  # PENDING: outside the selection, not sent
    await proj.apply([ev("s", "started", "01")])
    await proj.apply([ev("f", "finished", "02")])
    kinds: list[tuple[Kind, Status]] = []
    async for item in w.events():
        if isinstance(item, WatchEvent):
            kinds.append((item.kind, item.change.job.status))
            if len(kinds) == 2:
                break
    assert kinds == [(Kind.ADDED, Status.RUNNING), (Kind.REMOVED, Status.DONE)]
    w.close()


async def test_idle_filtered_watch_bookmarks_the_log_position(
    aredis: aioredis.Redis, keys: Keys, feed: ChangeFeed
) -> None:
    proj = Projection(aredis, keys)
    w = Watch(feed, aredis, keys, JobQuery(user_ids=("nobody",)), heartbeat_s=0.2, buffer=100)
    await w.open(None)
    await proj.apply([ev("c", "created", "00"), ev("s", "started", "01")])
    last = await current_position(aredis, keys)
    async for item in w.events():
        assert isinstance(item, Bookmark), "a job outside the filter must not be sent"
        if item.position == last:
            break
    w.close()


async def test_falling_out_of_retention_mid_stream_ends_with_a_gone_event(
    aredis: aioredis.Redis, keys: Keys, feed: ChangeFeed
) -> None:
    proj = Projection(aredis, keys)
    events = decode_all(make_traffic(random.Random(4), 40, dup_rate=0, bad_rate=0))
    for e in events:
        await proj.apply([e])
    w = Watch(feed, aredis, keys, JobQuery(), heartbeat_s=60, buffer=100, chunk=5)
    await w.open(ORIGIN)  # retained so far: the first chunk is read
    session = _Session(w, LiveMetrics())
    body = session.body()
    opening, first = await body.__anext__(), await body.__anext__()
    assert opening.startswith(b"retry: ")
    assert first.count(b"\nevent: ") == 5  # the first catch-up chunk, written at once
    await aredis.xtrim(keys.changes, maxlen=0)  # an operator trims the log under the watcher
    rest = [c async for c in body]
    assert rest[-1].startswith(b"event: gone\ndata: ")
    assert b'"code":"410"' in rest[-1] and b"list again" in rest[-1]
    assert session.closed and session.metrics.watch_connections == 0
    with contextlib.suppress(StopAsyncIteration):
        await body.__anext__()


class _LosesOneCancel(aioredis.Redis):
    """A real client whose blocking read drops the first cancellation it sees and returns nothing: what
    Python 3.11's ``asyncio.wait_for`` (redis-py sends each command under it) does to a cancellation
    that lands just as the send completes."""

    lost = 0

    async def xread(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        try:
            return await super().xread(*args, **kwargs)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            if _LosesOneCancel.lost:
                raise
            _LosesOneCancel.lost += 1
            return []


async def test_close_ends_the_feed_even_when_a_cancellation_is_lost(settings: Settings, keys: Keys) -> None:
    # Before: the reader went on reading after close() cancelled it, close() waited for it forever,
    # and so did the API's shutdown (processes left running after SIGTERM).
    _LosesOneCancel.lost = 0
    f = ChangeFeed(lambda: _LosesOneCancel.from_url(settings.redis_url), keys, block_ms=100)
    sub = await f.subscribe(10)
    await asyncio.sleep(0.05)  # the reader is in its blocking read
    await asyncio.wait_for(f.close(), 2)
    assert _LosesOneCancel.lost == 1, "the cancellation was dropped once, and close() still ended the reader"
    assert f._task is not None and f._task.done()
    f.unsubscribe(sub)
    # Nothing starts it again (a watch opened during shutdown gets a 503 instead).
    with pytest.raises(StoreUnavailable):
        await f.subscribe(10)
