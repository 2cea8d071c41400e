"""TOP (execute.top): the matches that can hold the page, selected by counting over the order's
bit-sliced index, against the reference: every BSI order and direction, tiny to huge filters,
ties, nulls, pages up to the last match, one slice per call or all at once."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query import cost
from registry.query.executor import Executor
from registry.query.planner import Plan, plan
from registry.settings import Settings
from tests.harness import project_traffic
from tests.query_params import parse_params
from tests.reference import Params, Reference, _wire_date

BSI_ORDERS = ("created_at", "start_timestamp", "end_timestamp", "runs")


def _filters(ref: Reference, rng: random.Random) -> list[Params]:
    jobs = list(ref.jobs().values())
    by_size = Counter(j["project_id"] for j in jobs).most_common()
    stamps = sorted(j["start_timestamp"] for j in jobs if j["start_timestamp"] is not None)
    return [
        [("status", "DONE")],
        [("status", "RUNNING"), ("status", "PENDING")],
        [("errors", "true")],
        [("errors", "false"), ("origin", "CLIENT")],
        [("project_id", by_size[0][0])],
        [("project_id", by_size[-1][0]), ("status", "DONE"), ("status", "ERROR")],
        [("user_id", jobs[0]["user_id"])],
        [("start_date", _wire_date(rng, stamps[len(stamps) // 3]))],
        [("min_runs", "2"), ("max_runs", "60")],
    ]


@pytest.mark.parametrize("slices", [1, 64], ids=["one-slice-per-call", "all-slices-in-one-call"])
async def test_top_matches_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, slices: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whenever TOP can answer, it does; it narrows down to a single candidate (ties aside).
    def always(p: Plan, strategy: cost.Strategy, total: int, listed: int, first: int) -> bool:
        return p.order_bsi is not None and p.offset + p.limit <= first

    monkeypatch.setattr(cost, "top_pays", always)
    monkeypatch.setattr(cost, "top_slices", lambda listed: slices)
    monkeypatch.setattr(cost, "TOP_STOP", 1)
    rng = random.Random(31 + slices)
    ref, orders = await project_traffic(aredis, keys, rng, 500)
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    tuned = {"candidate_threshold": 0, "collect_threshold": 0, "one_call_budget": 0}
    ex = Executor(aredis, keys, Settings(**{**fields, **tuned}))
    selected = 0
    for filters in _filters(ref, rng):
        total = ref.query(filters, orders)[0]
        for order in BSI_ORDERS:
            for direction in ("ASC", "DESC"):
                for offset in {0, 1, total // 2, max(total - 3, 0), total}:
                    limit = rng.choice((1, 3, 100))
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(limit))]
                    page = await ex.run(plan(parse_params(params), keys))
                    assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
                    selected += "BSI" in page.strategy
    assert selected > 50, selected
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"
