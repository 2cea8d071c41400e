"""The API over a partitioned registry (issue 14): lists, page tokens, single jobs and stats answer as the
reference does, through the same handlers (P = 3, data routed by Partitions.of; on one server, and over the
partitions' masters of a 3-master cluster)."""

from __future__ import annotations

import random

from litestar.testing import AsyncTestClient

from api.app import create_app
from registry.settings import Settings
from tests.harness import decode_all
from tests.reference import Reference, make_traffic, random_query
from tests.topology import apply_events, both_topologies, creation_orders, open_registry

JOBS = "/api/v2/jobs"

pytestmark = both_topologies


async def test_api_over_three_partitions(settings: Settings) -> None:
    rng = random.Random(33)
    traffic = make_traffic(rng, 300)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    # P stamped as the workers do at a registry's first start: the API learns it before its first answer.
    route = await open_registry(settings.redis_url, settings.prefix, partitions=3)
    try:
        await apply_events(route, decode_all(traffic), set_to_bitmap_threshold=20, chunk=5)
        orders = await creation_orders(route, sorted(ref.jobs()))
    finally:
        await route.aclose()
    async with AsyncTestClient(create_app(settings)) as client:
        for _ in range(60):
            params = random_query(rng, ref)
            total, ids = ref.query(params, orders)
            r = await client.get(JOBS, params=params)
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["pagination"]["total"], [j["id"] for j in body["data"]]) == (total, ids), params
            assert [j["creation_order"] for j in body["data"]] == [orders[j] for j in ids]
        # A page-token chain through the API walks the whole order.
        params = [("order_by", "runs"), ("order_by_direction", "ASC"), ("limit", "37")]
        want = ref.query([*params, ("limit", "1000")], orders)[1]
        got: list[str] = []
        r = await client.get(JOBS, params=params)
        while True:
            body = r.json()
            got += [j["id"] for j in body["data"]]
            token = body["pagination"]["next_page_token"]
            if token is None:
                break
            r = await client.get(JOBS, params=[*params, ("page_token", token)])
            assert r.status_code == 200, r.text
        assert got == want
        job_id = next(iter(orders))
        r = await client.get(f"{JOBS}/{job_id}")
        assert r.json()["data"]["creation_order"] == orders[job_id]
        r = await client.get(f"{JOBS}/stats")
        assert r.json()["data"]["total"] == len(orders)
        # The list's X-Resource-Version is the vector of the partitions' positions, which the watch takes.
        version = (await client.get(JOBS)).headers["x-resource-version"]
        assert len(version.split("_")) == 3
        # The watch resumes from a vector of the three partitions' positions; one position is not one.
        r = await client.get(f"{JOBS}/watch", headers={"Last-Event-ID": "12-0"})
        assert r.status_code == 422
        # Past the end of the partitions' logs: every partition's watch opened, and refused as on one registry.
        r = await client.get(f"{JOBS}/watch", headers={"Last-Event-ID": "_".join(["99999999999999-0"] * 3)})
        assert r.status_code == 410, r.text
