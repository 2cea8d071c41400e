"""`jobreg migrate` from layout 6 (tests/fixtures/layout6.rdb, written by the layout-6 code) to 7: the sort indexes.

Each of the six sorted sets is bulk-built into a bucketed sort index (registry/store/sortidx.py) and
dropped; a run stopped part-way resumes at the next page. Pages and buckets are made tiny here
(sortidx.FILL = 4) so the fixture's 2,100 jobs span many of both and the stop falls inside a field.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import load_settings
from registry.store import indexes, layout, migrate, record, sortidx
from registry.store.projection import Projection
from tests.conftest import RedisServer, layout_fixture_store
from tests.harness import decode_all, stream_entries, text_fields
from tests.integration.test_sortidx import structure
from tests.query_params import parse_params
from tests.reference import Reference, random_query

PREFIX = "v6"  # the fixture's (tests/fixtures/make_layout6.py)


class Stop(Exception):
    """Raised from the progress callback: the run dies between two pages."""


@pytest.fixture
def v6_store() -> Iterator[RedisServer]:
    """A private redis-server loaded with the layout-6 fixture."""
    with layout_fixture_store(6) as server:
        yield server


@pytest.fixture
async def client(v6_store: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(v6_store.url)
    yield c
    await c.aclose()


def reference(url: str, keys: Keys) -> tuple[Reference, list[dict[str, str]]]:
    sync = redis.Redis.from_url(url)
    texts = [t for _, f in stream_entries(sync, keys.events) if (t := text_fields(f)) is not None]
    sync.close()
    ref = Reference()
    for t in texts:
        ref.add(t)
    return ref, texts


async def check_queries(client: aioredis.Redis, url: str, keys: Keys, ref: Reference, seed: int) -> None:
    ids = sorted(ref.jobs())
    handles = await record.handles(client, keys, ids)
    orders = {j: h for j, h in zip(ids, handles, strict=True) if h}
    ex = Executor(client, keys, load_settings({}, redis_url=url, prefix=PREFIX))
    rng = random.Random(seed)
    for _ in range(80):
        params = random_query(rng, ref)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == ref.query(params, orders), params


async def test_migrate_6_to_7_stopped_midway_resumes_and_queries_match(
    v6_store: RedisServer, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(PREFIX)
    assert (await layout.read(client, keys)).version == 6
    monkeypatch.setattr(sortidx, "FILL", 4)
    before = {f: await client.zrange(keys.sort_set_v6(f), 0, -1, withscores=True) for f in indexes.SORT_FIELDS}
    assert all(len(v) > 300 for k, v in before.items() if k not in ("start_timestamp", "end_timestamp"))

    calls: list[tuple[int, int]] = []

    def stop_in_the_third_field(step: migrate.Step, done: int, total: int) -> None:
        calls.append((done, total))
        if done > sum(len(before[f]) for f in indexes.SORT_FIELDS[:2]) + 50:
            raise Stop

    with pytest.raises(Stop):
        await migrate.migrate(client, keys, progress=stop_in_the_third_field)
    state = await layout.read(client, keys)
    assert (state.version, state.migrating_to) == (6, 7)
    field = int(await client.hget(keys.migration, "field") or 0)  # type: ignore[misc]
    assert field == 2 and not await client.exists(keys.sort_set_v6(indexes.SORT_FIELDS[0]))
    assert await client.exists(keys.sort_set_v6(indexes.SORT_FIELDS[2]))  # its index part-built

    outcome = await migrate.migrate(client, keys)
    assert (outcome.source, outcome.target) == (6, indexes.LAYOUT) and await client.get(keys.layout) == str(
        indexes.LAYOUT
    ).encode()
    assert not await client.exists(keys.migration)
    for f in indexes.SORT_FIELDS:
        assert not await client.exists(keys.sort_set_v6(f))
        got = await structure(client, keys.sort(f))
        assert got == [(bytes(m), int(s)) for m, s in before[f]], f

    ref, texts = reference(v6_store.url, keys)
    await check_queries(client, v6_store.url, keys, ref, 7)

    # The migrated indexes take new writes: more traffic for the same jobs and new ones.
    rng = random.Random(8)
    more = [dict(t, event_id=f"{t['event_id'][:-4]}{rng.randrange(16**4):04x}") for t in rng.sample(texts, 200)]
    from tests.reference import make_traffic

    more += make_traffic(random.Random(9), 150)
    await Projection(client, keys).apply(decode_all(more))
    for t in more:
        ref.add(t)
    await check_queries(client, v6_store.url, keys, ref, 10)
