"""A list query's Redis round trips, counted by a real redis-server's MONITOR, and the position it
reports: read in the call that finds the page, so a watch resumed from it misses no later change."""

from __future__ import annotations

import asyncio
import random
import shutil
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from registry.keys import Keys
from registry.live.changes import current_position, decode_entry, format_position, parse_position, read_after
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.query_params import parse_params
from tests.reference import Reference, make_traffic

JOBS = "/api/v2/jobs"


@pytest.fixture
async def loaded(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> AsyncIterator[Reference]:
    if shutil.which("redis-server") is None:
        pytest.skip("MONITOR needs a real redis-server (the fallback is fakeredis)")
    ref = Reference()
    traffic = make_traffic(random.Random(5), 300, n_projects=6)
    for entry in traffic:
        ref.add(entry)
    # Projects stay member sets (their jobs are few): a project filter is a PICK driver.
    await Projection(aredis, keys, set_to_bitmap_threshold=1000, chunk=50).apply(decode_all(traffic))
    yield ref


async def counted(settings: Settings, client: AsyncTestClient, params: list[tuple[str, str]]) -> list[str]:
    """The commands (names) one GET /api/v2/jobs sent to Redis itself (not from inside scripts)."""
    monitor_client = aioredis.Redis.from_url(settings.redis_url)
    marker = f"{settings.prefix}:end-of-request"
    names: list[str] = []
    try:
        async with monitor_client.monitor() as monitor:
            # MONITOR only reports once it is on: a first command through it says so.
            await monitor_client.execute_command("PING")
            response = await client.get(JOBS, params=params)
            assert response.status_code == 200, response.text
            async with aioredis.Redis.from_url(settings.redis_url) as other:
                await other.echo(marker)
            while True:
                cmd = await asyncio.wait_for(monitor.next_command(), 10)
                text = str(cmd["command"])
                if marker in text:
                    break
                # Script-internal commands say so; other tests' commands name other prefixes.
                if cmd.get("client_type") != "lua" and settings.prefix in text:
                    names.append(text.split()[0].upper())
    finally:
        await monitor_client.aclose()
    return names


async def test_a_list_query_is_one_script_call(loaded: Reference, settings: Settings) -> None:
    jobs = list(loaded.jobs().values())
    project = Counter(j["project_id"] for j in jobs).most_common()[-1][0]
    async with AsyncTestClient(create_app(settings)) as client:
        await client.get(JOBS)  # scripts loaded, layout checked: what every later request skips
        # No size to read first: the page, its records and the position in one EVALSHA.
        for params in (
            [],
            [("status", "DONE"), ("order_by", "updated_at")],
            [("status", "RUNNING"), ("status", "PENDING"), ("order_by", "end_timestamp"), ("offset", "3")],
            [("id", jobs[0]["id"]), ("id", jobs[1]["id"]), ("order_by", "runs")],
            [("id", "0f0f0f0f-0000-4000-8000-000000000000")],  # the benchmark's floor: matches nothing
        ):
            assert await counted(settings, client, params) == ["EVALSHA"], params
        # A project's size first (a set and its bitmap), pipelined with the position; then PICK.
        got = await counted(settings, client, [("project_id", project), ("status", "DONE")])
        assert sorted(got[:-1]) == ["BITCOUNT", "SCARD", "XREVRANGE"] and got[-1] == "EVALSHA", got


async def test_position_is_read_with_the_page(
    loaded: Reference, aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    """While jobs change, every listing counts exactly the changes logged up to its position, and a
    change applied after a listing is read by a watch resumed from the listing's position."""
    project = Counter(j["project_id"] for j in loaded.jobs().values()).most_common()[-1][0]
    ex = Executor(aredis, keys, settings)
    queries = {
        "page": plan(parse_params([("status", "RUNNING"), ("limit", "100")]), keys),  # PAGE
        "pick": plan(parse_params([("project_id", project), ("status", "DONE"), ("limit", "100")]), keys),  # PICK
    }
    start = await current_position(aredis, keys)
    more = make_traffic(random.Random(6), 200, dup_rate=0, bad_rate=0)
    for entry in more:  # new jobs of the listed project too, so both listings change
        if "project_id" in entry and random.Random(entry["event_id"]).random() < 0.5:
            entry["project_id"] = project
    seen: list[tuple[str, tuple[int, int], int, set[str]]] = []
    projection = Projection(aredis, keys, set_to_bitmap_threshold=1000, chunk=20)

    async def write() -> None:
        events = decode_all(more)
        for i in range(0, len(events), 20):
            await projection.apply(events[i : i + 20])
            await asyncio.sleep(0)

    async def read() -> None:
        while not writer.done():
            for name, query in queries.items():
                listing = await ex.listing(query)
                assert listing.position is not None and listing.strategy.startswith("one call:"), listing.strategy
                seen.append((name, listing.position, listing.total, {job.id for job in listing.jobs}))
            await asyncio.sleep(0)

    writer = asyncio.create_task(write())
    await asyncio.gather(writer, read())
    # The state of every job as of each position, from the change log (which holds every change here).
    before = {
        "page": {j["id"] for j in loaded.jobs().values() if j["status"] == "RUNNING"},
        "pick": {j["id"] for j in loaded.jobs().values() if j["project_id"] == project and j["status"] == "DONE"},
    }
    log = [decode_entry(i, f) for i, f in await aredis.xrange(keys.changes, min="(" + format_position(start))]
    assert log, "the writer logged no change"
    positions = {p for _, p, _, _ in seen}
    assert len(positions) > 2, "no listing ran while jobs changed"
    for name, position, total, ids in seen:
        want = set(before[name])
        for change in log:
            if change.position > position:
                break
            job = change.job
            matches = job.status == "RUNNING" if name == "page" else job.project_id == project and job.status == "DONE"
            (want.add if matches else want.discard)(job.id)
        assert total == len(want) and ids <= want, (name, position)
    # A change after the last listing: a watch from that listing's position reads it.
    last = seen[-1][1]
    assert parse_position(format_position(last)) == last
    await Projection(aredis, keys).apply(decode_all(make_traffic(random.Random(7), 1, dup_rate=0, bad_rate=0)))
    after = await read_after(aredis, keys, last, None, 1000)
    assert after and all(c.position > last for c in after)
