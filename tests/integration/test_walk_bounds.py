"""Walks that start at a zone map's bound (execute.walk.zone_start) against the reference: every
time order and direction, filters from one job to all, date windows, deep offsets, chunked and
resumed walks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings
from registry.store import indexes
from tests.harness import project_traffic
from tests.query_params import parse_params
from tests.reference import Params, Reference, _wire_date

TIME_ORDERS = ("created_at", "updated_at", "start_timestamp", "end_timestamp")


def _filters(ref: Reference, rng: random.Random) -> list[Params]:
    jobs = sorted(ref.jobs().values(), key=lambda j: j["created_at"])
    stamps = sorted(j["start_timestamp"] for j in jobs if j["start_timestamp"] is not None)
    ends = sorted(j["end_timestamp"] for j in jobs if j["end_timestamp"] is not None)
    project = Counter(j["project_id"] for j in jobs).most_common()[0][0]
    out: list[Params] = [
        [("status", "DONE")],
        [("errors", "true")],
        [("project_id", project)],
        [("user_id", jobs[-1]["user_id"])],  # a recent job's user
        [("batch_id", jobs[0]["batch_id"])],  # the oldest job's batch
        [("status", "DONE"), ("status", "ERROR"), ("end_date", _wire_date(rng, ends[len(ends) // 4]))],
        [("start_date", _wire_date(rng, stamps[len(stamps) // 2]))],
    ]
    for _ in range(4):  # old and recent windows
        lo = rng.randrange(len(stamps))
        hi = min(lo + rng.randint(1, 20), len(ends) - 1)
        out.append([("start_date", _wire_date(rng, stamps[lo])), ("end_date", _wire_date(rng, ends[hi]))])
    return out


@pytest.mark.parametrize("budget", [0, 3], ids=["chunked", "one-call-resumed"])
async def test_walks_from_zone_bounds_match_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexes, "ZONE_SIZE", 8)  # many blocks on a few hundred jobs
    rng = random.Random(23 + budget)
    # In slices: jobs change after they are listed, so updated_at's zone minima are stale (too low).
    ref, orders = await project_traffic(aredis, keys, rng, 600, batches=7)
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    # No candidates and no collecting: every page is walked, as at scale.
    tuned = {"candidate_threshold": 0, "collect_threshold": 0, "walk_chunk": 7, "one_call_budget": budget}
    ex = Executor(aredis, keys, Settings(**{**fields, **tuned}))
    jumped = jumped_updated = 0
    for filters in _filters(ref, rng):
        total = ref.query(filters, orders)[0]
        for order in TIME_ORDERS:
            for direction in ("ASC", "DESC"):
                offset = rng.choice((0, 1, total // 2, max(total - 2, 0), total + 1))
                limit = rng.choice((1, 5, 100))
                params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                params += [("offset", str(offset)), ("limit", str(limit))]
                page = await ex.run(plan(parse_params(params), keys))
                assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
                jumped += "zone map" in page.strategy
                jumped_updated += "zone map" in page.strategy and order == "updated_at"
    assert jumped, "no walk started at a zone map's bound"
    assert jumped_updated, "no walk by updated_at started at its zone map's bound"
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"
