"""Scatter queries (issue 14): the same events in a 1-partition and a 4-partition registry answer alike.

Events are routed by Partitions.of(job_id) to per-partition projections (no workers); every answer
of a random query workload (offsets deep and shallow, through the top merge and the rank search,
page-token chains) equals the reference, and the two registries' pages are identical (their
creation_order compared through the mapping: the rank within a partition).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from registry.domain.model import Event
from registry.partition import Partitions
from registry.query import scatter as scatter_mod
from registry.query.scatter import Scatter
from registry.query.seek import next_seek
from registry.route import OneNode
from registry.settings import Settings
from registry.store import record
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.query_params import parse_params
from tests.reference import Reference, make_traffic, random_query


async def load(r: aioredis.Redis, parts: Partitions, events: Sequence[Event]) -> dict[str, int]:
    """Apply ``events`` routed by job to each partition's projection (in slices, as a stream would
    deliver them); every listed job's global creation_order."""
    projections = [Projection(r, k, set_to_bitmap_threshold=20, chunk=5) for k in parts.keys]
    for start in range(0, len(events), 97):
        routed: dict[int, list[Event]] = {}
        for e in events[start : start + 97]:
            routed.setdefault(parts.of(e.job_id), []).append(e)
        for i, batch in routed.items():
            await projections[i].apply(batch)
    orders: dict[str, int] = {}
    ids = sorted({e.job_id for e in events})
    for i, k in enumerate(parts.keys):
        mine = [j for j in ids if parts.of(j) == i]
        for job_id, h in zip(mine, await record.handles(r, k, mine), strict=True):
            if h:
                orders[job_id] = h * parts.count + i
    return orders


@pytest.fixture
def tuned(settings: Settings) -> Settings:
    fields = {f: getattr(settings, f) for f in settings.__struct_fields__}
    return Settings(**{**fields, "walk_chunk": 50, "select_offset": 50})


@pytest.mark.parametrize("top_merge_max", [1000, 0], ids=["top-merge", "rank-search"])
async def test_partitioned_answers_match_one_partition_and_reference(
    aredis: aioredis.Redis, tuned: Settings, top_merge_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scatter_mod, "TOP_MERGE_MAX", top_merge_max)
    rng = random.Random(14 + top_merge_max)
    traffic = make_traffic(rng, 500)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    events = decode_all(traffic)
    one, four = Partitions(tuned.prefix + "a", 1), Partitions(tuned.prefix + "b", 4)
    orders1, orders4 = await load(aredis, one, events), await load(aredis, four, events)
    assert set(orders1) == set(orders4) == set(ref.jobs())
    # creation_order: unique, and in each partition in the same order as on one registry.
    assert len(set(orders4.values())) == len(orders4)
    for i in range(4):
        mine = [j for j in orders4 if four.of(j) == i]
        assert sorted(mine, key=orders1.__getitem__) == sorted(mine, key=orders4.__getitem__)
    s1, s4 = Scatter(OneNode(aredis, one), tuned), Scatter(OneNode(aredis, four), tuned)
    for _ in range(250):
        params = random_query(rng, ref)
        query = parse_params(params)
        want1, want4 = ref.query(params, orders1), ref.query(params, orders4)
        (page1, _, _), (page4, _, more4) = await s1.list_page(query, None), await s4.list_page(query, None)
        assert (page1.total, [j.id for j in page1.jobs]) == want1, params
        assert (page4.total, [j.id for j in page4.jobs]) == want4, (params, page4.strategy)
        assert [j.creation_order for j in page4.jobs] == [orders4[j.id] for j in page4.jobs]
        if query.order_by.value != "creation_order":
            strip = [{**record_fields(j), "creation_order": 0} for j in page1.jobs]
            assert strip == [{**record_fields(j), "creation_order": 0} for j in page4.jobs]
        assert more4 == (query.offset + len(page4.jobs) < page4.total)
        c1, c4 = await s1.counts(query), await s4.counts(query)
        assert c1 == c4


def record_fields(job: object) -> dict[str, object]:
    return {f: getattr(job, f) for f in job.__struct_fields__}  # type: ignore[attr-defined]


async def test_page_token_chains_walk_the_whole_order(aredis: aioredis.Redis, tuned: Settings) -> None:
    rng = random.Random(41)
    traffic = make_traffic(rng, 300)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    four = Partitions(tuned.prefix + "c", 4)
    orders = await load(aredis, four, decode_all(traffic))
    s4 = Scatter(OneNode(aredis, four), tuned)
    for _ in range(40):
        params = [p for p in random_query(rng, ref) if p[0] not in ("offset", "limit")]
        params.append(("limit", str(rng.randint(1, 40))))
        query = parse_params(params)
        total, want = ref.query([*params, ("limit", "100000")], orders)
        got: list[str] = []
        page, start, more = await s4.list_page(query, None)
        got += [j.id for j in page.jobs]
        seek = None
        while more:
            seek = next_seek(query.order_by, seek, start, page.jobs)
            page, start, more = await s4.list_page(query, seek)
            assert page.total == total
            got += [j.id for j in page.jobs]
        assert got == want, params


async def test_lookups_go_to_the_jobs_partition(aredis: aioredis.Redis, tuned: Settings) -> None:
    rng = random.Random(5)
    traffic = make_traffic(rng, 60)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    four = Partitions(tuned.prefix + "d", 4)
    orders = await load(aredis, four, decode_all(traffic))
    s4 = Scatter(OneNode(aredis, four), tuned)
    ids = list(ref.jobs())
    missing = "00000000-0000-4000-8000-000000000000"
    details = await s4.details([*ids, missing])
    assert details[-1] is None
    assert [d.id for d in details[:-1] if d] == ids
    assert [d.creation_order for d in details[:-1] if d] == [orders[j] for j in ids]


SWEEP_SHAPES = [
    [("order_by", "runs"), ("order_by_direction", "ASC")],
    [("order_by", "runs"), ("status", "DONE")],
    [("order_by", "runs"), ("min_runs", "20")],
    [("order_by", "created_at"), ("origin", "CLIENT"), ("origin", "AZURE")],
    [("order_by", "end_timestamp"), ("order_by_direction", "ASC")],
    [("order_by", "start_timestamp"), ("errors", "false")],
    [("order_by", "updated_at")],
    [("order_by", "id"), ("order_by_direction", "ASC")],
    [("order_by", "creation_order")],
    # Filtered, read block by block at depth (registry/query/blockpage.py): ranged, nullable, unranged orders.
    [("order_by", "updated_at"), ("status", "DONE"), ("status", "ERROR")],
    [("order_by", "creation_order"), ("order_by_direction", "ASC"), ("origin", "CLIENT")],
    [("order_by", "end_timestamp"), ("errors", "false"), ("order_by_direction", "ASC")],
    [("order_by", "created_at"), ("order_by_direction", "ASC"), ("min_runs", "2")],
]
# The filtered shapes above whose every page is read block by block (no nulls in their order).
BLOCKWISE_SHAPES = SWEEP_SHAPES[9:10] + SWEEP_SHAPES[10:11] + SWEEP_SHAPES[12:13]


@pytest.mark.parametrize("parts", [3, 5])
async def test_rank_search_at_every_depth(
    aredis: aioredis.Redis, tuned: Settings, parts: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets swept through the whole order (tie groups of runs, nulls, filters), by rank search only."""
    monkeypatch.setattr(scatter_mod, "TOP_MERGE_MAX", 0)
    rng = random.Random(parts)
    traffic = make_traffic(rng, 400)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    many = Partitions(tuned.prefix + "s", parts)
    orders = await load(aredis, many, decode_all(traffic))
    s = Scatter(OneNode(aredis, many), tuned)
    for shape in SWEEP_SHAPES:
        total = ref.query(shape, orders)[0]
        for offset in sorted({0, 1, 2, total // 3, total // 2, total - 7, total - 1, total, rng.randrange(total + 1)}):
            params = [*shape, ("offset", str(max(0, offset))), ("limit", str(rng.choice((1, 3, 10, 40))))]
            page, _, _ = await s.list_page(parse_params(params), None)
            assert (page.total, [j.id for j in page.jobs]) == ref.query(params, orders), (params, page.strategy)
            if shape in BLOCKWISE_SHAPES and offset < total:
                assert "block search" in page.strategy, (params, page.strategy)
