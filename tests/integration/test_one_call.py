"""The one-call PAGE path against the reference: every order and direction, tiny to huge filters,
deep offsets, and budgets from one entry (every walk resumed in chunks) to whole walks."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.live.changes import current_position
from registry.query import cost
from registry.query.check import compile_check
from registry.query.executor import Executor, Listing
from registry.query.planner import plan
from registry.settings import Settings
from registry.store import record
from registry.store.projection import Projection
from tests.harness import decode_all, project_traffic
from tests.query_params import parse_params
from tests.reference import ORDER_BYS, Params, Reference, _wire_date, make_traffic, render_job


def _tuned(settings: Settings, budget: int) -> Settings:
    # Candidates off (threshold 0) and no collecting, so every filter goes through bitmaps and
    # the pages are walked, as at scale; walk_chunk small so resumed walks take several calls.
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    return Settings(
        **{**fields, "candidate_threshold": 0, "collect_threshold": 0, "walk_chunk": 7, "one_call_budget": budget}
    )


async def _listed(ex: Executor, keys: Keys, ref: Reference, orders: dict[str, int], params: Params) -> Listing:
    """The listing of ``params``, checked against the reference: total, page, every job as rendered, and
    the change log's position (nothing changes here, so the last one)."""
    listing = await ex.listing(plan(parse_params(params), keys))
    total, job_ids = ref.query(params, orders)
    assert (listing.total, [job.id for job in listing.jobs]) == (total, job_ids), params
    rendered = msgspec.json.decode(msgspec.json.encode(listing.jobs))
    assert rendered == [render_job(ref.jobs()[j], orders[j]) for j in job_ids], params
    assert listing.position == await current_position(ex.redis, keys), params
    return listing


def _filters(ref: Reference) -> list[Params]:
    """From no filter to one job: statuses, origins, errors both ways, set- and bitmap-indexed projects."""
    jobs = list(ref.jobs().values())
    by_size = Counter(j["project_id"] for j in jobs).most_common()
    big, small = by_size[0][0], by_size[-1][0]  # big: a bitmap (threshold 20), small: a set
    return [
        [],
        [("status", "DONE")],
        [("status", "RUNNING"), ("status", "PENDING"), ("origin", "AZURE")],
        [("errors", "true")],
        [("errors", "false"), ("origin", "CLIENT")],
        [("project_id", big)],
        [("project_id", small), ("status", "DONE"), ("status", "ERROR")],
        [("project_id", big), ("project_id", small), ("errors", "false")],
        [("batch_id", jobs[0]["batch_id"]), ("user_id", jobs[0]["user_id"])],
    ]


@pytest.mark.parametrize("trust_estimate", [True, False], ids=["walks-within-estimate", "every-walk-tried"])
async def test_one_call_matches_reference(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, trust_estimate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not trust_estimate:
        # Every walk is tried in the call, so small budgets run out mid-walk (phase 1) and resume.
        monkeypatch.setattr(cost, "one_call_walk_limit", lambda budget: 1 << 40)
    rng = random.Random(11)
    ref, orders = await project_traffic(aredis, keys, rng, 500)
    how: Counter[str] = Counter()
    everything = ref.query([], orders)[0]
    # A walk whose estimate is short but that reads on (running jobs started last, walked from the
    # first start), and one deep in a nullable order's nulls (no estimate bounds those).
    long_walks = [
        [("status", "RUNNING"), ("order_by", "start_timestamp"), ("order_by_direction", "ASC"), ("limit", "1")],
        [("order_by", "end_timestamp"), ("offset", str(everything - 2)), ("limit", "5")],
    ]
    for budget in (1, 5, 60, 1000):
        ex = Executor(aredis, keys, _tuned(settings, budget))
        queries = [*long_walks]
        for filters in _filters(ref):
            total = ref.query(filters, orders)[0]
            for order in ORDER_BYS:
                for direction in ("ASC", "DESC"):
                    offset = rng.choice((0, 1, total // 2, max(total - 3, 0), total, total + 4))
                    limit = rng.choice((1, 7, 100))
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    queries.append([*params, ("offset", str(offset)), ("limit", str(limit))])
        for params in queries:
            page = await _listed(ex, keys, ref, orders, params)
            assert page.strategy.startswith("one call"), (params, page.strategy)
            how[";".join(page.strategy.split(";")[:2]).rstrip("0123456789")] += 1
    # Both ends of the path ran: pages done in the one call, and walks resumed in chunks.
    assert any(s.startswith("one call:") for s in how), how
    assert any("sorted there" in s for s in how) == trust_estimate, how  # collected, not walked
    assert any(s.startswith("one call counted (walk over budget)") for s in how), how
    assert any(s.startswith("one call counted (walk estimate over budget)") for s in how) == trust_estimate, how
    assert not await aredis.keys(keys.temp_pattern()), "a temporary key outlived its query"


async def test_pick_matches_reference(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    """Small drivers (set-indexed projects, batches, users, id prefixes, ids) with every other kind of filter,
    ranges and nullable orders included, checked and sorted in one PICK call."""
    rng = random.Random(12)
    traffic = make_traffic(rng, 500)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    await Projection(aredis, keys, set_to_bitmap_threshold=1000, chunk=50).apply(decode_all(traffic))
    ids = list(ref.jobs())
    orders = {j: h for j, h in zip(ids, await record.handles(aredis, keys, ids), strict=True) if h}
    jobs = list(ref.jobs().values())
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    # A budget every driver here fits (the default leaves the larger ones to the chunked path).
    ex = Executor(aredis, keys, Settings(**{**fields, "one_call_budget": 100_000}))
    runs = sorted(j["runs"] for j in jobs)
    starts = sorted(j["start_timestamp"] for j in jobs if j["start_timestamp"] is not None)
    others: list[Params] = [
        [],
        [("status", "DONE"), ("status", "RUNNING")],
        [("errors", "false"), ("min_runs", str(runs[len(runs) // 3]))],
        [("origin", "CLIENT"), ("max_runs", str(runs[len(runs) // 2]))],
        [("start_date", _wire_date(rng, starts[len(starts) // 2]))],
        # Several bitmap filters: AND-ed into one bitmap first when the driver is large enough.
        [("status", "DONE"), ("status", "ERROR"), ("origin", "CLIENT"), ("errors", "false")],
    ]
    drivers: list[Params] = [
        [("project_id", jobs[0]["project_id"])],
        [("project_id", jobs[1]["project_id"]), ("project_id", jobs[2]["project_id"])],
        [("batch_id", jobs[3]["batch_id"])],
        [("user_id", jobs[4]["user_id"])],
        # One hex digit is a bitmap since layout 5 (Keys.id_hex), not a driver: prefixes of 2 and 3 are.
        [("id__starts_with", jobs[5]["id"][:3])],
        [("id__starts_with", jobs[6]["id"][:2])],
        # Ids: found through their records; one unknown, one given twice.
        [("id", jobs[7]["id"]), ("id", "0f0f0f0f-0000-4000-8000-00000000abcd"), ("id", jobs[8]["id"])],
        [*[("id", j["id"]) for j in jobs[9:40]], ("id", jobs[9]["id"])],
    ]
    for driver in drivers:
        for other in others:
            filters = [*driver, *other]
            total = ref.query(filters, orders)[0]
            for order in ORDER_BYS:
                for direction in ("ASC", "DESC"):
                    offset = rng.choice((0, 1, total // 2, max(total - 2, 0), total + 1))
                    params = [*filters, ("order_by", order), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(rng.choice((1, 5, 100))))]
                    page = await _listed(ex, keys, ref, orders, params)
                    assert page.strategy.startswith("one call:"), (params, page.strategy)
    # Sets that outgrew the budget since they were sized: PICK reads nothing and says so.
    program = compile_check(keys.uuids, None, ())
    sets = [keys.member_set("project", jobs[0]["project_id"])]
    picked = await ex.scripts.pick(
        program,
        sets,
        offset=0,
        limit=5,
        desc=False,
        order="handle",
        cap=0,
        changes=keys.changes,
        record_prefix=keys.job_prefix(),
    )
    assert not picked.done and not picked.uuids and not picked.records
    assert picked.position == await current_position(aredis, keys)


async def test_pick_pages_an_id_prefix_in_its_own_order(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    """An id prefix's range of the id sort set is already in id order: PICK pages its matches in that
    order without sorting them. A third of the jobs share the prefix "ab" (hundreds of candidates),
    checked against every kind of other filter, both directions, offsets from 0 to past the end."""
    rng = random.Random(13)
    traffic = make_traffic(rng, 900)
    jobs_in_order = list(dict.fromkeys(e["job_id"] for e in traffic))
    renamed = {j: "ab" + j[2:] for j in jobs_in_order[::3]}
    traffic = [{k: renamed.get(v, v) if k in ("job_id", "parent_id") else v for k, v in e.items()} for e in traffic]
    ref = Reference()
    for e in traffic:
        ref.add(e)
    await Projection(aredis, keys, set_to_bitmap_threshold=20, chunk=50).apply(decode_all(traffic))
    ids = list(ref.jobs())
    orders = {j: h for j, h in zip(ids, await record.handles(aredis, keys, ids), strict=True) if h}
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    ex = Executor(aredis, keys, Settings(**{**fields, "one_call_budget": 100_000}))
    small = Executor(aredis, keys, Settings(**{**fields, "one_call_budget": 20}))
    jobs = list(ref.jobs().values())
    runs = sorted(j["runs"] for j in jobs)
    others: list[Params] = [
        [],
        [("status", "DONE")],
        [("status", "RUNNING"), ("status", "PENDING"), ("origin", "AZURE")],
        [("errors", "true")],
        [("project_id", Counter(j["project_id"] for j in jobs).most_common()[0][0])],
        [("min_runs", str(runs[len(runs) // 2]))],
    ]
    for prefix in ("ab", "ab" + jobs[0]["id"][2], "AB"):
        for other in others:
            filters = [("id__starts_with", prefix), *other]
            total = ref.query(filters, orders)[0]
            assert total or other, filters
            for direction in ("ASC", "DESC"):
                for offset in sorted({0, 1, total // 3, max(total - 2, 0), total, total + 1}):
                    params = [*filters, ("order_by", "id"), ("order_by_direction", direction)]
                    params += [("offset", str(offset)), ("limit", str(rng.choice((1, 7, 100))))]
                    page = await _listed(ex, keys, ref, orders, params)
                    assert page.strategy.startswith("one call: id prefix"), (params, page.strategy)
                    # Nothing else to test: a rank range of the prefix's range, even past the budget's
                    # candidates, as long as offset + limit fit it (else the chunked path).
                    assert ("by rank" in page.strategy) == (not other), (params, page.strategy)
                    page = await _listed(small, keys, ref, orders, params)
                    ranked = not other and offset + int(params[-1][1]) <= 20
                    assert ("by rank" in page.strategy) == ranked, (params, page.strategy)
