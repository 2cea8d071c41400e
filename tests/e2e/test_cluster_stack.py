"""jobreg end to end on a real 3-master Redis Cluster (issue 14): `jobreg worker` and `jobreg api` as real
processes with JOBREG_REDIS_URL naming one node answer GET /api/v2/jobs as a standalone registry fed the same
events does (creation_order compared through each registry's own order of the jobs)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from pasqal_cloud.endpoints import Endpoints
from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
from pasqal_cloud.utils.constants import JobStatus
from pasqal_cloud.utils.filters import JobFilters, PaginationParams

from api.app import create_app
from registry.keys import Keys
from registry.nodes import open_route
from registry.partition import Partitions
from registry.settings import Settings
from registry.store import record
from registry.store.partitions import CLUSTER_DEFAULT
from registry.wire.publisher import Publisher
from tests.cluster import LocalCluster, three_masters
from tests.conftest import free_port
from tests.e2e.test_sdk import StaticToken, params_of
from tests.harness import decode_all, healthy, jobreg, spawn, stop, wait_for
from tests.integration.test_scatter import load
from tests.reference import Reference, make_traffic, random_query

JOBS = "/api/v2/jobs"
P = CLUSTER_DEFAULT  # a new registry on a cluster, JOBREG_PARTITIONS unset


cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


def _log_tail(logs: Path) -> str:
    return "\n".join(f"----- {p.name} -----\n{p.read_text(errors='replace')[-3000:]}" for p in logs.glob("*.log"))


@pytest.fixture
def stack(cluster: LocalCluster, settings: Settings, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A worker and an API on the cluster, under the standalone test's prefix; their URL and environment."""
    port = free_port()
    env = {
        **os.environ,
        "JOBREG_REDIS_URL": cluster.url,  # one node: the processes find the rest
        "JOBREG_PREFIX": settings.prefix,
        "JOBREG_BLOCK_MS": "100",
        "JOBREG_API_PROCESSES": "1",
        "JOBREG_LOG_LEVEL": "INFO",
    }
    url = f"http://127.0.0.1:{port}"
    procs = [spawn(["worker"], env, tmp_path / "worker.log")]
    procs.append(spawn(["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"], env, tmp_path / "api.log"))
    try:
        wait_for(lambda: healthy(url), 30, "API up", lambda: _log_tail(tmp_path))
        yield url, env
    finally:
        for proc in procs:
            stop(proc)
        print(_log_tail(tmp_path))  # shown by pytest only when the test fails


async def cluster_orders(url: str, prefix: str, job_ids: list[str]) -> dict[str, int]:
    """Every listed job's creation_order on the cluster, read from its partition's master (handle * P + i)."""
    route = await open_route(url, Partitions(prefix, P))
    try:
        orders: dict[str, int] = {}
        for i, keys in enumerate(route.partitions.keys):
            mine = [j for j in job_ids if route.partitions.of(j) == i]
            for job_id, h in zip(mine, await record.handles(route.client(i), keys, mine), strict=True):
                if h:
                    orders[job_id] = h * P + i
        return orders
    finally:
        await route.aclose()


def without_order(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != "creation_order"}


def same_page(
    got: dict[str, Any],
    want: dict[str, Any],
    orders: tuple[dict[str, int], dict[str, int]],
    ref: Reference,
    params: Any,
) -> None:
    """The cluster's page ``got`` and the standalone's ``want``: the same total, each the reference's jobs
    in its own order, each job the same but for its creation_order, which is each registry's own."""
    got_ids, want_ids = [j["id"] for j in got["data"]], [j["id"] for j in want["data"]]
    assert got["pagination"]["total"] == want["pagination"]["total"], params
    assert (got["pagination"]["total"], got_ids) == ref.query(params, orders[0]), params
    assert (want["pagination"]["total"], want_ids) == ref.query(params, orders[1]), params
    standalone = {j["id"]: j for j in want["data"]}
    for job in got["data"]:
        assert job["creation_order"] == orders[0][job["id"]]
        if job["id"] in standalone:
            assert without_order(job) == without_order(standalone[job["id"]])
            assert standalone[job["id"]]["creation_order"] == orders[1][job["id"]]


async def sdk_lists(url: str, ref: Reference, orders: dict[str, int], projects: list[str]) -> None:
    """The real pasqal-cloud SDK lists the cluster's jobs as the reference does (auth is off: any token does)."""
    sdk = PasqalCloudClient(token_provider=StaticToken("any"), endpoints=Endpoints(core=url))
    for filters, offset, limit in (
        ({"project_id": projects[0]}, 0, 100),
        ({"project_id": projects[-1], "status": [JobStatus.DONE, JobStatus.ERROR]}, 5, 20),
        ({"project_id": projects[1], "min_runs": 10, "user_id": ["alice", "bob"]}, 0, 50),
    ):
        page = PaginationParams(offset=offset, limit=limit)
        resp = await asyncio.to_thread(sdk.get_jobs, filters=JobFilters(**filters), pagination_params=page)
        want_total, want_ids = ref.query(params_of(filters, offset, limit), orders)
        assert (resp.total, [j.id for j in resp.results]) == (want_total, want_ids), filters
        assert want_total > 0, filters


def cli_on_a_cluster(env: dict[str, str], ref: Reference, total: int) -> None:
    """`jobreg dead-letters` and `jobreg top` read the dead-letter stream, the counters and every partition."""
    listed = jobreg("dead-letters", "list", "--json", "--count", "1000", env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == ref.invalid
    top = jobreg("top", "--once", "--interval", "0.1", env=env)
    assert top.returncode == 0, top.stderr
    assert f"{total:,}" in top.stdout, top.stdout
    # Replay: a script in the events stream's slot, deletes in the dead stream's (still invalid: dead again).
    replayed = jobreg("dead-letters", "replay", env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"replayed {ref.invalid} entries"


async def token_chain(get: Any, params: list[tuple[str, str]]) -> list[str]:
    ids: list[str] = []
    r = await get(JOBS, params=params)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        ids += [j["id"] for j in body["data"]]
        token = body["pagination"]["next_page_token"]
        if token is None:
            return ids
        r = await get(JOBS, params=[*params, ("page_token", token)])


async def test_a_cluster_registry_answers_as_a_standalone_one(
    cluster: LocalCluster, stack: tuple[str, dict[str, str]], aredis: aioredis.Redis, settings: Settings
) -> None:
    url, env = stack
    prefix, keys = settings.prefix, Keys(settings.prefix)
    rng = random.Random(41)
    traffic = make_traffic(rng, 300)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    # The standalone registry: the same events applied in-process on the test's own redis-server (P = 1).
    standalone = await load(aredis, Partitions(prefix, 1), decode_all(traffic))

    # The cluster: half to the contract's stream (routed by the workers), half by the routing publisher
    # straight to each job's partition stream, through redis-py's cluster client.
    half = len(traffic) // 2
    with redis.RedisCluster.from_url(cluster.url) as client:
        for entry in traffic[:half]:
            client.xadd(keys.ingress, dict(entry))  # type: ignore[arg-type]
        publisher = Publisher(client, partitions=Partitions(prefix, P))  # type: ignore[arg-type]
        for entry in traffic[half:]:
            publisher.publish_raw(entry)
    # The CLI's publisher finds the partitions on a cluster too (a job of its own, deleted below).
    extra = "00000000-0000-4000-8000-000000000001"
    fields = [f"batch_id={extra}", "project_id=00000000-0000-4000-8000-000000000002", "user_id=cli", "runs=1"]
    done = jobreg("publish", "created", extra, *(a for f in fields for a in ("--field", f)), env=env)
    assert done.returncode == 0, done.stderr

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:

        async def settled() -> bool:
            health = (await http.get("/healthz")).json()
            stats = (await http.get(f"{JOBS}/stats")).json()
            return bool(
                health["consumer_lag"] == 0
                and health["pending"] == 0
                and health["dead_letters"] >= ref.invalid
                and stats["data"]["total"] == len(standalone) + 1
            )

        for _ in range(600):
            if await settled():
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the cluster registry did not settle: {(await http.get('/healthz')).text}")
        assert (await http.get("/healthz")).json()["dead_letters"] == ref.invalid
        # The dead-letter stream (its own slot) through the API: every invalid entry, once.
        dead = (await http.get("/api/v2/dead-letters", params={"limit": 100})).json()
        assert dead["pagination"]["total"] == len(dead["data"]) == ref.invalid
        cli_on_a_cluster(env, ref, len(standalone) + 1)
        # The CLI's job is there; the comparison below leaves it out through its filters and counts.
        r = await http.get(f"{JOBS}/{extra}")
        assert r.status_code == 200, r.text
        orders = await cluster_orders(cluster.url, prefix, sorted(ref.jobs()))
        assert len(orders) == len(standalone)

        # P was stamped by the first process to start: the cluster's default.
        tagged = cluster.node_of(keys.partitions).client()
        assert int(tagged.get(keys.partitions) or 0) == P
        tagged.close()

        async with AsyncTestClient(create_app(settings)) as local:
            projects = sorted({j["project_id"] for j in ref.jobs().values()})
            queries = [random_query(rng, ref) for _ in range(40)]
            # A deep offset, and every query on a project (the CLI's job is in none of them).
            queries += [[("project_id", p), ("offset", "60"), ("limit", "30")] for p in projects]
            # Every order over every job, deep pages included.
            for field in ("created_at", "creation_order", "updated_at", "runs", "id", "end_timestamp"):
                for direction, offset in (("ASC", "0"), ("DESC", "150"), ("ASC", "270")):
                    queries.append(
                        [("order_by", field), ("order_by_direction", direction), ("offset", offset), ("limit", "50")]
                    )
            for params in queries:
                if not any(k == "project_id" for k, _ in params):
                    params = [("project_id", p) for p in projects] + list(params)
                got, want = await http.get(JOBS, params=params), await local.get(JOBS, params=params)
                assert got.status_code == want.status_code == 200, (params, got.text, want.text)
                same_page(got.json(), want.json(), (orders, standalone), ref, params)

            await sdk_lists(url, ref, orders, projects)

            chain = [*(("project_id", p) for p in projects), ("order_by", "runs"), ("limit", "23")]
            want_ids = ref.query([*chain, ("limit", "1000")], orders)[1]
            assert await token_chain(http.get, chain) == want_ids
            for job_id in list(orders)[:20]:
                got, want = (await http.get(f"{JOBS}/{job_id}")).json(), (await local.get(f"{JOBS}/{job_id}")).json()
                assert without_order(got["data"]) == without_order(want["data"])
                assert (got["data"]["creation_order"], want["data"]["creation_order"]) == (
                    orders[job_id],
                    standalone[job_id],
                )
