"""Collected candidates in CHECK's top mode (each call returns only its matches that can be in the page)
against the reference: many small calls, ties, nulls, every order and direction, offsets to past the end."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings
from tests.harness import project_traffic
from tests.query_params import parse_params
from tests.reference import ORDER_BYS, Params, _wire_date


@pytest.mark.parametrize("chunk", [16, 1000], ids=["many-calls", "one-call"])
async def test_collected_pages_match_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, chunk: int
) -> None:
    rng = random.Random(21)
    ref, orders = await project_traffic(aredis, keys, rng, 600)
    jobs = list(ref.jobs().values())
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    # Every driver is checked in the chunked candidates path (no one-call script), CHECK_CALLS-sized
    # calls of at least 16 candidates (``chunk`` caps them), so a page's rows come from many calls.
    tuned = {"one_call_budget": 0, "candidate_threshold": 100_000, "collect_threshold": 100_000, "walk_chunk": chunk}
    ex = Executor(aredis, keys, Settings(**{**fields, **tuned}))
    by_project = Counter(j["project_id"] for j in jobs).most_common()
    starts = sorted(j["start_timestamp"] for j in jobs if j["start_timestamp"] is not None)
    drivers: list[Params] = [
        [("project_id", by_project[0][0])],  # a bitmap (threshold 20)
        [("project_id", by_project[0][0]), ("project_id", by_project[-1][0]), ("status", "DONE"), ("status", "ERROR")],
        [("user_id", jobs[0]["user_id"]), ("errors", "false")],
        [("id__starts_with", jobs[1]["id"][:1]), ("origin", "CLIENT"), ("origin", "AZURE")],
        [("batch_id", jobs[2]["batch_id"]), ("batch_id", jobs[3]["batch_id"]), ("project_id", by_project[1][0])],
        [("project_id", by_project[0][0]), ("start_date", _wire_date(rng, starts[len(starts) // 3]))],
    ]
    checked = 0
    for filters in drivers:
        total = ref.query(filters, orders)[0]
        for order in ORDER_BYS:
            for direction in ("ASC", "DESC"):
                for offset in {0, 1, total // 3, max(total - 3, 0), total + 1}:
                    limit = rng.choice((1, 3, 7, 100))
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(limit))]
                    page = await ex.run(plan(parse_params(params), keys))
                    assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
                    checked += "sorted here" in page.strategy
    assert checked > 150  # the collect path, not another strategy, answered most of them
