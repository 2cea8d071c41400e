"""GET /api/v2/jobs/stats against a real Redis: exact counts by status and origin for any filter, vs the reference."""

from __future__ import annotations

import random
from collections import Counter

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.conftest import RedisServer
from tests.integration.test_api import ORPHAN, Dataset, make_dataset
from tests.reference import STATUSES, random_query

STATS = "/api/v2/jobs/stats"


@pytest.fixture(scope="module")
def stats_dataset(redis_server: RedisServer) -> Dataset:
    return make_dataset(redis_server.url, 17, 300)


def expected(ds: Dataset, params: list[tuple[str, str]]) -> dict[str, object]:
    _, ids = ds.ref.query([*params, ("offset", "0"), ("limit", "100000")], ds.orders)
    jobs = [ds.ref.jobs()[i] for i in ids]
    by_status = Counter(j["status"] for j in jobs)
    by_origin = Counter(j["origin"] for j in jobs)
    return {
        "total": len(jobs),
        "by_status": {s: by_status[s] for s in ("PENDING", "RUNNING", "CANCELING", "DONE", "ERROR", "CANCELED")},
        "by_origin": {o: by_origin[o] for o in ("CLIENT", "AZURE", "OVH", "UNKNOWN")},
    }


async def test_counts_match_reference(stats_dataset: Dataset) -> None:
    # Small chunks, so the bounded scripts that build the filter bitmap take several calls.
    settings = msgspec.structs.replace(stats_dataset.settings, walk_chunk=50)
    rng = random.Random(30)
    async with AsyncTestClient(create_app(settings)) as c:
        for _ in range(200):
            params = random_query(rng, stats_dataset.ref)
            resp = await c.get(STATS, params=params)
            assert resp.status_code == 200, (params, resp.text)
            body = resp.json()
            assert (body["status"], body["code"]) == ("success", "200")
            data = body["data"]
            assert {k: data[k] for k in ("total", "by_status", "by_origin")} == expected(stats_dataset, params), params
            assert sum(data["by_status"].values()) == data["total"]


async def test_unfiltered_counts_and_pipeline_health(stats_dataset: Dataset) -> None:
    async with AsyncTestClient(create_app(stats_dataset.settings)) as c:
        data = (await c.get(STATS)).json()["data"]
    assert data["total"] == len(stats_dataset.ref.jobs())  # the orphan (no `created`) is not counted
    assert ORPHAN not in stats_dataset.ref.jobs()
    assert set(data["by_status"]) == set(STATUSES)
    health = data["pipeline"]
    # Loaded through the projection directly: no stream, no group, no dead letters.
    assert health["consumer_lag"] == 0 and health["pending"] == 0 and health["dead_letters"] == 0
    assert health["changes_retained"] > 0


async def test_bad_filters_are_422(stats_dataset: Dataset) -> None:
    async with AsyncTestClient(create_app(stats_dataset.settings)) as c:
        resp = await c.get(STATS, params=[("status", "DONE"), ("status", "LOST"), ("min_runs", "x")])
    assert resp.status_code == 422
    assert {tuple(d["loc"]) for d in resp.json()["detail"]} == {("query", "status"), ("query", "min_runs")}
