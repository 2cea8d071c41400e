"""Cursor pagination against the reference: paging with seeks gives exactly the offset-paged sequence.

A random registry on real Redis; random filters; every order key and direction; small pages (so tie
groups and the passage from values to a nullable order's nulls fall inside and across pages); the
executor settings of test_query_vs_reference's variants, so every strategy meets the seek bound.
The chain starts at offset 0 or at a random offset, as a client switching to tokens would.
"""

from __future__ import annotations

import random

import msgspec
import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.seek import RANGED, Seek, list_page, next_seek, ranged
from registry.query.spec import OrderBy
from registry.settings import Settings
from registry.store import indexes
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.integration.test_query_vs_reference import creation_orders
from tests.query_params import parse_params
from tests.reference import ORDER_BYS, Params, Reference, make_traffic, random_query

VARIANTS = {
    "defaults": ({}, 1024),
    "bitmaps-and-walks": ({"collect_threshold": 0, "candidate_threshold": 0}, 1024),
    "candidates": ({"collect_threshold": 3000, "candidate_threshold": 3000}, 1024),
    "walks-start-by-counting": ({"collect_threshold": 0, "candidate_threshold": 0, "select_offset": 0}, 1024),
    "scans-small-zones": ({"collect_threshold": 0, "candidate_threshold": 0}, 8),
    "chunked-only": ({"collect_threshold": 0, "candidate_threshold": 0, "one_call_budget": 0}, 1024),
}


def filters_only(params: Params) -> Params:
    return [(k, v) for k, v in params if k not in ("order_by", "order_by_direction", "limit", "offset")]


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_paging_with_seeks_gives_the_offset_sequence(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides, zone_size = VARIANTS[variant]
    monkeypatch.setattr(indexes, "ZONE_SIZE", zone_size)
    rng = random.Random(f"tokens-{variant}")
    traffic = make_traffic(rng, 300)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    proj = Projection(aredis, keys, set_to_bitmap_threshold=20, chunk=5)
    events = decode_all(traffic)
    for i in range(0, len(events), 97):
        await proj.apply(events[i : i + 97])
    orders = await creation_orders(aredis, keys, list(ref.jobs()))
    tuned = msgspec.structs.replace(settings, walk_chunk=50, **overrides)
    ex = Executor(aredis, keys, tuned)
    seen_ranged = seen_positional = 0
    for i in range(12):
        # The first without filters: an unfiltered seek is answered by its rank in the sort set.
        filters = [] if i == 0 else filters_only(random_query(rng, ref))
        for order in ORDER_BYS:
            for direction in ("ASC", "DESC"):
                base = [*filters, ("order_by", order), ("order_by_direction", direction)]
                total, want = ref.query([*base, ("limit", "100000")], orders)
                limit = rng.choice((1, 2, 3, 7))
                start = rng.choice((0, 0, rng.randint(0, total + 1)))
                got: list[str] = []
                seek: Seek | None = None
                offset = start
                while True:
                    params = [*base, ("limit", str(limit)), ("offset", str(offset if seek is None else 0))]
                    query = parse_params(params)
                    page, first, more = await list_page(ex, plan(query, keys), seek)
                    assert page.total == total, (params, seek)
                    assert first == start + len(got), (params, seek)
                    got += [j.id for j in page.jobs]
                    if not more:
                        break
                    assert page.jobs, (params, seek)
                    seek = next_seek(OrderBy(order), seek, first, page.jobs)
                    if ranged(seek, OrderBy(order)):
                        seen_ranged += 1
                    else:
                        seen_positional += 1
                assert got == want[start:], (base, limit, start)
    # Both ways of resuming were exercised (the ranged one on every RANGED order in practice).
    assert seen_ranged > 100 and seen_positional > 10
    assert {OrderBy(o) for o in ORDER_BYS} >= RANGED
