"""Projection + query engine against real Redis, checked query by query with the reference."""

from __future__ import annotations

import random

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings
from registry.store import indexes, record
from registry.store.projection import Projection
from tests.harness import decode_all
from tests.query_params import parse_params
from tests.reference import Reference, far_end_traffic, make_traffic, random_query


async def creation_orders(r: aioredis.Redis, keys: Keys, job_ids: list[str]) -> dict[str, int]:
    return {j: h for j, h in zip(job_ids, await record.handles(r, keys, job_ids), strict=True) if h}


@pytest.mark.parametrize(
    ("collect_threshold", "select_offset", "zone_size", "one_call_budget", "far_end"),
    [
        (0, 5000, 1024, 1000, 0),
        (3000, 5000, 1024, 1000, 0),
        (0, 0, 1024, 1000, 0),
        (0, 5000, 8, 1000, 0),
        (3000, 5000, 8, 1000, 0),
        (0, 5000, 1024, 0, 0),
        (0, 5000, 1024, 3, 0),
        (0, 5000, 1024, 3, 150),
        (0, 5000, 1024, 0, 150),
    ],
    ids=[
        "bitmaps-and-walks",
        "candidates",
        "walks-start-by-counting",
        "scans-small-zones",
        "candidates-small-zones",
        "chunked-only",
        "one-call-resumed",
        "far-end-one-call-resumed",
        "far-end-chunked",
    ],
)
async def test_random_queries_match_reference(
    aredis: aioredis.Redis,
    settings: Settings,
    keys: Keys,
    collect_threshold: int,
    select_offset: int,
    zone_size: int,
    one_call_budget: int,
    far_end: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small zones make the scans cross many blocks (and stop early) even on a few hundred jobs;
    # the projection and the executor both read indexes.ZONE_SIZE when they run.
    monkeypatch.setattr(indexes, "ZONE_SIZE", zone_size)
    rng = random.Random(7 + collect_threshold + select_offset + zone_size)
    traffic = make_traffic(rng, 400)
    # far_end: a project of that many jobs at the far end of every order taken DESC (its oldest times,
    # fewest runs, smallest ids), named in half the queries: walks that find no match where they start.
    far, traffic = far_end_traffic(rng, traffic, far_end) if far_end else ("", traffic)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    proj = Projection(aredis, keys, set_to_bitmap_threshold=20, chunk=5)
    events = decode_all(traffic)
    for i in range(0, len(events), 97):
        await proj.apply(events[i : i + 97])
    again = await proj.apply(events)  # redelivery of everything: no effect
    assert again.changed == 0
    orders = await creation_orders(aredis, keys, list(ref.jobs()))
    assert sorted(orders.values()) == sorted(set(orders.values()))
    tuned = Settings(
        **{
            **{f: getattr(settings, f) for f in settings.__struct_fields__},
            "collect_threshold": collect_threshold,
            "candidate_threshold": collect_threshold,
            "select_offset": select_offset,
            "walk_chunk": 50,
            "one_call_budget": one_call_budget,
        }
    )
    ex = Executor(aredis, keys, tuned)
    for _ in range(300):
        params = random_query(rng, ref)
        if far and rng.random() < 0.5:
            params = [("project_id", far), *params]
        want_total, want_ids = ref.query(params, orders)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == (want_total, want_ids), params
