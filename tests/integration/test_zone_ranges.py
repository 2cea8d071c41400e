"""Range filters as bitmaps (registry/query/execute/ranges.py) against the jobs' own values: every range
field (start, end, created_at), open and closed bounds, several ranges at once, empty results, and deep
offsets through the executor; with the zone map always used, used for some ranges only, or never."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query import cost
from registry.query.bits import bit_positions
from registry.query.context import QueryContext
from registry.query.execute.ranges import range_bitmaps
from registry.query.executor import Executor
from registry.query.planner import Range, plan
from registry.query.scripts import Scripts
from registry.settings import Settings
from registry.store import indexes
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.integration.test_query_vs_reference import creation_orders
from tests.query_params import parse_params
from tests.reference import EPOCH, ORDER_BYS, STATUSES, Reference, make_traffic

# cost.MAX_STRADDLING: every zone-map range from its zone map; only those straddling one block; none.
STRADDLING = [pytest.param(10_000, id="zone-map"), pytest.param(1, id="mixed"), pytest.param(0, id="bsi")]


async def _registry(r: aioredis.Redis, keys: Keys, seed: int) -> tuple[Reference, dict[str, int]]:
    rng = random.Random(seed)
    traffic = make_traffic(rng, 300)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    proj = Projection(r, keys, set_to_bitmap_threshold=20, chunk=5)
    events = decode_all(traffic)
    for i in range(0, len(events), 89):
        await proj.apply(events[i : i + 89])
    return ref, await creation_orders(r, keys, list(ref.jobs()))


def _bound(rng: random.Random, values: list[int]) -> int | None:
    """None (open), a job's value give or take 1 µs, or beyond every value."""
    roll = rng.random()
    if roll < 0.25 or not values:
        return None
    if roll < 0.9:
        return rng.choice(values) + rng.choice((-1, 0, 0, 1))
    return rng.choice((min(values) - 10, max(values) + 10))


@pytest.mark.parametrize("zone_size", [8, 64])
@pytest.mark.parametrize("most", STRADDLING)
async def test_range_bitmaps_match_the_values(
    aredis: aioredis.Redis,
    settings: Settings,
    keys: Keys,
    zone_size: int,
    most: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(indexes, "ZONE_SIZE", zone_size)
    monkeypatch.setattr(cost, "MAX_STRADDLING", most)
    ref, orders = await _registry(aredis, keys, zone_size + most)
    jobs = ref.jobs()
    rng = random.Random(most * 31 + zone_size)
    scripts = Scripts(aredis)
    await scripts.load()
    fields = ("start_timestamp", "end_timestamp", "created_at")
    for _ in range(150):
        preds: list[Range] = []
        for _ in range(rng.randint(1, 3)):
            field: Any = rng.choice(fields)
            values = [j[field] for j in jobs.values() if j[field] is not None]
            lo, hi = _bound(rng, values), _bound(rng, values)
            preds.append(Range(field, keys.sort(field), keys.column(field), field != "created_at", lo, hi))
        want = {
            orders[job_id]
            for job_id, job in jobs.items()
            if all(
                job[p.field] is not None
                and (p.lo is None or job[p.field] >= p.lo)
                and (p.hi is None or job[p.field] <= p.hi)
                for p in preds
            )
        }
        async with QueryContext(aredis, keys, settings, scripts) as ctx:
            parts = await range_bitmaps(ctx, preds)
            assert 1 <= len(parts) <= len(preds)
            both = parts[0] if len(parts) == 1 else await ctx.bitop("AND", parts)
            data = await aredis.get(both) or b""
        assert set(bit_positions(data, 0, len(data) * 8, False)) == want, preds


@pytest.mark.parametrize("most", STRADDLING)
async def test_date_window_queries_match_reference(
    aredis: aioredis.Redis,
    settings: Settings,
    keys: Keys,
    most: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(indexes, "ZONE_SIZE", 8)
    monkeypatch.setattr(cost, "MAX_STRADDLING", most)
    ref, orders = await _registry(aredis, keys, 100 + most)
    jobs = list(ref.jobs().values())
    # Thresholds 0: the ranges become bitmaps (no candidates checked against them).
    tuned = Settings(
        **{
            **{f: getattr(settings, f) for f in settings.__struct_fields__},
            "collect_threshold": 0,
            "candidate_threshold": 0,
            "walk_chunk": 50,
            "one_call_budget": 0,
        }
    )
    ex = Executor(aredis, keys, tuned)
    rng = random.Random(most)
    for _ in range(120):
        params: list[tuple[str, str]] = []
        for name, field in (("start_date", "start_timestamp"), ("end_date", "end_timestamp")):
            stamps = [j[field] for j in jobs if j[field] is not None]
            bound = _bound(rng, stamps)
            if bound is not None or (name == "end_date" and not params):  # at least one date
                at = max(stamps) if bound is None else bound
                params.append((name, _iso(at)))
        if rng.random() < 0.4:
            params += [("status", s) for s in rng.sample(STATUSES, rng.randint(1, 3))]
        params += [
            ("order_by", rng.choice(ORDER_BYS)),
            ("order_by_direction", rng.choice(("ASC", "DESC"))),
            ("limit", str(rng.randint(1, 40))),
        ]
        total = ref.query(params, {})[0]
        # The first page, a deep one, the last match alone, or past the end.
        params.append(("offset", str(rng.choice((0, rng.randint(0, total + 1), max(total - 1, 0), total + 5)))))
        want = ref.query(params, orders)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == want, params


def _iso(us: int) -> str:
    """A timestamp in µs since the epoch as the API takes it (UTC, microseconds)."""
    return (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")
