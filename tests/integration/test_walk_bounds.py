"""Walks that start at a zone map's bound (execute.walk.zone_start) against the reference: every
time order and direction, filters from one job to all, date windows, deep offsets, chunked and
resumed walks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query import cost
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings
from registry.store import indexes, record
from registry.store.projection import Projection
from tests.harness import decode_all, project_traffic
from tests.query_params import parse_params
from tests.reference import Params, Reference, _wire_date, far_end_traffic, make_traffic

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


async def test_deep_offsets_walk_from_a_selected_start_rather_than_collect(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    """Collecting is on (its default threshold), but a deep offset over an order with a bit-sliced index
    is costed as a walk from the rank its selection finds (cost.walk_estimate), so it walks from there;
    every page against the reference, offsets from just past select_offset to past the end."""
    rng = random.Random(31)
    ref, orders = await project_traffic(aredis, keys, rng, 700, batches=3)
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    tuned = {"candidate_threshold": 0, "select_offset": 8, "walk_chunk": 7, "one_call_budget": 0}
    ex = Executor(aredis, keys, Settings(**{**fields, **tuned}))
    selected = 0
    for filters in [[], *_filters(ref, rng)]:
        total = ref.query(filters, orders)[0]
        for order in ("runs", "created_at", "start_timestamp", "end_timestamp", "updated_at", "id"):
            for direction in ("ASC", "DESC"):
                for offset in {9, total // 2, max(total - 3, 0), total + 1}:
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(rng.choice((1, 5, 100))))]
                    page = await ex.run(plan(parse_params(params), keys))
                    assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
                    selected += "selected by counting" in page.strategy
    assert selected, "no deep offset walked from a selected start"
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"


async def test_candidates_checked_against_status_lists_or_ed_first_match_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked candidates path ORs a list of statuses or origins into one bitmap before checking
    many candidates (cost.pre_or_pays), and leaves it as is for a few: both against the reference."""
    rng = random.Random(37)
    ref, orders = await project_traffic(aredis, keys, rng, 400)
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    ex = Executor(aredis, keys, Settings(**{**fields, "one_call_budget": 0}))
    decided: Counter[bool] = Counter()
    real = cost.pre_or_pays

    def spy(keys_: int, candidates: int) -> bool:
        decided[real(keys_, candidates)] += 1
        return real(keys_, candidates)

    monkeypatch.setattr(cost, "pre_or_pays", spy)
    jobs = list(ref.jobs().values())
    projects = [p for p, _ in Counter(j["project_id"] for j in jobs).most_common()]
    drivers: list[Params] = [
        [("project_id", projects[0])],
        [("project_id", projects[len(projects) // 2])],
        [("id", j["id"]) for j in jobs[:9]],  # a few candidates: tested bitmap by bitmap
    ]
    for driver in drivers:
        for lists in (
            [("status", "DONE"), ("status", "ERROR"), ("status", "RUNNING")],
            [("origin", "AZURE"), ("origin", "CLIENT"), ("status", "PENDING"), ("status", "DONE")],
        ):
            for order in ("runs", "id", "updated_at", "end_timestamp"):
                params = [*driver, *lists, ("order_by", order), ("limit", "7"), ("offset", "2")]
                page = await ex.run(plan(parse_params(params), keys))
                assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
    assert decided[True] and decided[False], decided
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"


@pytest.mark.parametrize("budget", [0, 3], ids=["chunked", "one-call-resumed"])
async def test_walks_over_a_filter_at_the_far_end_of_the_order_stop_and_match_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, budget: int
) -> None:
    """A filter whose matches sit at the far end of every order taken DESC (a project of the oldest jobs,
    fewest runs, smallest ids, listed among the others so no zone map sets them apart) looks cheap to walk
    (matches spread evenly, says the estimate); the walk samples its first chunk, finds no match, and
    stops for the alternative (selection over the order's BSI, or collecting). Every page against the
    reference, every order and direction, offsets from 0 to past the end, with and without other filters."""
    rng = random.Random(41 + budget)
    project, traffic = far_end_traffic(rng, make_traffic(rng, 500), 150)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    projection = Projection(aredis, keys, set_to_bitmap_threshold=20, chunk=50)
    await projection.apply(decode_all(traffic))
    ids = list(ref.jobs())
    orders = {j: h for j, h in zip(ids, await record.handles(aredis, keys, ids), strict=True) if h}
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    # No candidates and no collecting up front: every page is first walked, as at scale.
    tuned = {"candidate_threshold": 0, "collect_threshold": 0, "walk_chunk": 7, "one_call_budget": budget}
    ex = Executor(aredis, keys, Settings(**{**fields, **tuned}))
    stopped: Counter[str] = Counter()
    for filters in ([("project_id", project)], [("project_id", project), ("status", "DONE"), ("status", "ERROR")]):
        total = ref.query(filters, orders)[0]
        for order in ("created_at", "updated_at", "start_timestamp", "end_timestamp", "runs", "id"):
            for direction in ("ASC", "DESC"):
                for offset in {0, 1, total // 2, max(total - 2, 0), total + 1}:
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(rng.choice((1, 5, 100))))]
                    page = await ex.run(plan(parse_params(params), keys))
                    assert (page.total, page.job_ids) == ref.query(params, orders), (params, page.strategy)
                    if "walk stopped" in page.strategy:
                        stopped["BSI" if "selected by counting" in page.strategy else "collected"] += 1
    assert stopped["BSI"] and stopped["collected"], stopped
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"
