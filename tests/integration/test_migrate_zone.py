"""`jobreg migrate` from layout 6 (tests/fixtures/layout6.rdb, written by the layout-6 code) to 8 (its 7 -> 8 step: the
updated_at zone map, rebuilt from the value column), killed midway and resumed; then walks ordered by
updated_at start at its bounds and every answer matches the reference folded from the fixture's events."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.bits import i64s
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings, load_settings
from registry.store import layout
from registry.store.indexes import LAYOUT, ZONE_SIZE
from tests.conftest import RedisServer, layout_fixture_store
from tests.harness import ROOT, jobreg
from tests.integration.test_migrate import CountingProxy, clean_env, reference, sha
from tests.query_params import parse_params
from tests.reference import random_query

PREFIX = "v6"  # the fixture's (tests/fixtures/make_layout6.py)
BATCH = 300  # not a divisor of the zone size: calls end mid-block, and a block is widened by two calls


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


async def test_migrate_to_7_killed_midway_resumes_and_walks_by_updated_at_match_reference(
    v6_store: RedisServer, client: aioredis.Redis
) -> None:
    keys = Keys(PREFIX)
    jobs = int(await client.get(keys.seq) or 0)
    assert (await layout.read(client, keys)).version == 6 and LAYOUT == 8
    assert jobs > 2 * ZONE_SIZE and not await client.exists(keys.zone_max("updated_at"), keys.zone_min("updated_at"))

    # First run: relayed until its fourth rebuild call, which never reaches Redis; then killed.
    proxy = CountingProxy(v6_store.port, sha("migrate_zone"), hold_after=4)
    env = clean_env(f"redis://127.0.0.1:{proxy.port}/0", JOBREG_PREFIX=PREFIX)
    command = [sys.executable, "-m", "registry.ops.cli", "migrate", "--batch", str(BATCH)]
    first = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.held.wait(60), "the migration never reached its fourth call"
    finally:
        first.kill()
        first.wait()
        proxy.close()
    state = await layout.read(client, keys)
    assert (state.version, state.migrating_to) == (7, 8)
    # The first EVALSHA of a fresh server answers NOSCRIPT (redis-py then loads the script): three ran.
    assert state.next_handle == 1 + 3 * BATCH
    # The API of this version refuses the half-migrated store, naming the progress.
    assert f"from layout 7 to 8 ({3 * BATCH:,} of {jobs:,} jobs)" in (state.refusal() or "")

    proxy = CountingProxy(v6_store.port, sha("migrate_zone"))
    env = clean_env(f"redis://127.0.0.1:{proxy.port}/0", JOBREG_PREFIX=PREFIX)
    second = jobreg("migrate", "--batch", str(BATCH), env=env)
    proxy.close()
    assert second.returncode == 0, second.stderr
    assert proxy.seen == -(-(jobs - 3 * BATCH) // BATCH)  # only the handles left
    assert "layout 7 -> 8: the zone map of updated_at, from its value column" in second.stderr
    assert "jobreg migrate: the store now holds layout 8 (from 7," in second.stdout
    assert await client.get(keys.layout) == b"8" and not await client.exists(keys.migration)

    # The bounds are those of the jobs' updated_at, block by block (exact: built from final values).
    ref, orders = await reference(v6_store.url, client, keys)
    assert len(orders) == jobs
    high = i64s(await client.get(keys.zone_max("updated_at")) or b"")
    low = i64s(await client.get(keys.zone_min("updated_at")) or b"")
    by_block: dict[int, list[int]] = {}
    for job_id, h in orders.items():
        by_block.setdefault(h // ZONE_SIZE, []).append(ref.jobs()[job_id]["updated_at"])
    assert len(high) == len(low) == max(by_block) + 1
    for block, values in by_block.items():
        assert (high[block], low[block] - 1) == (max(values), min(values)), block

    # Walks ordered by updated_at (no candidates, no collecting: every page walked, as at scale).
    settings = load_settings({}, redis_url=v6_store.url, prefix=PREFIX)
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    tuned = {"candidate_threshold": 0, "collect_threshold": 0, "walk_chunk": 16, "one_call_budget": 0}
    ex = Executor(client, keys, Settings(**{**fields, **tuned}))
    rng = random.Random(7)
    jumped = 0
    for _ in range(150):
        params = [(k, v) for k, v in random_query(rng, ref) if k not in ("order_by", "order_by_direction")]
        params += [("order_by", "updated_at"), ("order_by_direction", rng.choice(("ASC", "DESC")))]
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
        jumped += "zone map" in page.strategy
    assert jumped, "no walk started at the updated_at zone map's bound"
    # And the whole grammar, with the default settings.
    ex = Executor(client, keys, settings)
    for _ in range(150):
        params = random_query(rng, ref)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
