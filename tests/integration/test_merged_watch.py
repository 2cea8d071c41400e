"""One watch over several partitions (issue 14): every partition's changes once, in its log's order, and a
resume from any event's vector id gets exactly the changes after it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec
import redis.asyncio as aioredis

from registry.live.changes import Position, parse_position
from registry.live.feed import ChangeFeed
from registry.live.merged import MergedEvent, MergedWatch, VectorBookmark, parse_vector
from registry.live.watch import Watch
from registry.partition import Partitions
from registry.query.spec import JobQuery
from registry.settings import Settings
from tests.harness import decode_all
from tests.integration.test_scatter import load
from tests.reference import make_traffic


@asynccontextmanager
async def merged(url: str, parts: Partitions, after: list[Position] | None) -> AsyncIterator[MergedWatch]:
    feeds = [ChangeFeed(lambda: aioredis.Redis.from_url(url), k, block_ms=50) for k in parts.keys]
    client = aioredis.Redis.from_url(url)
    watches = [
        Watch(f, client, k, JobQuery(), heartbeat_s=0.2, buffer=1000) for f, k in zip(feeds, parts.keys, strict=True)
    ]
    w = MergedWatch(watches)
    await w.open(after)
    try:
        yield w
    finally:
        w.close()
        for f in feeds:
            await f.close()
        await client.aclose()


async def collect(w: MergedWatch, n: int) -> list[MergedEvent]:
    out: list[MergedEvent] = []

    async def run() -> None:
        async for item in w.batches():
            if not isinstance(item, VectorBookmark):
                out.extend(item)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), 30)
    return out


async def logged(r: aioredis.Redis, parts: Partitions, after: list[Position]) -> list[tuple[int, Position]]:
    """Every change logged in each partition after its position: (partition, position)."""
    out = []
    for i, k in enumerate(parts.keys):
        start = f"({after[i][0]}-{after[i][1]}"
        for entry_id, _ in await r.xrange(k.changes, min=start):
            pos = parse_position(entry_id.decode())
            assert pos is not None
            out.append((i, pos))
    return out


async def test_merged_watch_delivers_every_partition_once_and_resumes(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    rng = random.Random(3)
    events = decode_all(make_traffic(rng, 150))
    parts = Partitions(settings.prefix + "w", 3)
    await load(aredis, parts, events[: len(events) // 2])
    async with merged(settings.redis_url, parts, None) as w:
        start = list(w.positions)
        await load(aredis, parts, events[len(events) // 2 :])
        want = await logged(aredis, parts, start)
        got = await collect(w, len(want))
    assert sorted((e.change.partition, e.change.change.position) for e in got) == sorted(want)
    assert len({(e.change.partition, e.change.change.position) for e in got}) == len(got)  # no duplicate
    for i in range(3):
        mine = [e.change.change.position for e in got if e.change.partition == i]
        assert mine == sorted(mine)  # each partition in its log's order
    for e in got:
        job = msgspec.json.decode(e.change.job_json)
        assert job["creation_order"] == e.change.change.handle * 3 + e.change.partition
        assert parts.of(job["id"]) == e.change.partition
    # Resume from the middle: exactly what came after, in each partition.
    k = len(got) // 2
    vector = parse_vector(got[k].change.id, 3)
    assert vector is not None
    async with merged(settings.redis_url, parts, vector) as again:
        rest = await collect(again, len(got) - k - 1)
    assert sorted((e.change.partition, e.change.change.position) for e in rest) == sorted(
        (e.change.partition, e.change.change.position) for e in got[k + 1 :]
    )
