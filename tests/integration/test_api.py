"""The HTTP API against a real private Redis, checked request by request with the reference."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from registry.keys import Keys
from registry.settings import Settings, load_settings
from registry.wire.events import decode_event
from tests.conftest import RedisServer, start_redis_server
from tests.harness import decode_all
from tests.reference import Reference, make_traffic, random_query, render_detail, render_job
from tests.topology import Store, both_topologies, load_events, standalone_only

Client = AsyncTestClient[Litestar]
JOBS = "/api/v2/jobs"
ORPHAN = "0f0f0f0f-0000-4000-8000-000000000001"  # has a `started` event but no `created`

pytestmark = both_topologies


@dataclass
class Dataset:
    settings: Settings
    ref: Reference
    orders: dict[str, int]

    def rendered(self, job_id: str) -> dict[str, Any]:
        return render_job(self.ref.jobs()[job_id], self.orders[job_id])

    def detail(self, job_id: str) -> dict[str, Any]:
        return render_detail(self.ref.jobs()[job_id], self.orders[job_id])


async def load(url: str, prefix: str, traffic: list[dict[str, str]], job_ids: list[str]) -> dict[str, int]:
    """Project the traffic through the real writer, each job in its partition (P stamped: 1 on a standalone
    server, 16 on a cluster), then an orphan's event; return each job's creation_order."""
    orphan = {"event_id": "orphan-1", "type": "started", "job_id": ORPHAN, "occurred_at": "2026-01-05T09:00:00"}
    events = [*decode_all(traffic), decode_event(orphan)]
    orders = await load_events(url, prefix, events, set_to_bitmap_threshold=20)
    return {j: orders[j] for j in job_ids if j in orders}


def make_dataset(url: str, seed: int, n_jobs: int) -> Dataset:
    """``n_jobs`` jobs of random traffic applied under a fresh prefix, with their reference."""
    prefix = f"t{os.urandom(4).hex()}"
    settings = load_settings({}, redis_url=url, prefix=prefix)
    traffic = make_traffic(random.Random(seed), n_jobs)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    orders = asyncio.run(load(url, prefix, traffic, list(ref.jobs())))
    assert len(orders) == len(ref.jobs())
    return Dataset(settings, ref, orders)


@pytest.fixture(scope="module")
def dataset(store: Store) -> Dataset:
    return make_dataset(store.url, 11, 400)


@pytest.fixture
async def client(dataset: Dataset) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(dataset.settings)) as c:
        yield c


def check_page(ds: Dataset, params: list[tuple[str, str]], resp: Any) -> list[str]:
    """Assert one list response equals the reference in every part; return the page's ids."""
    assert resp.status_code == 200, (params, resp.text)
    want_total, want_ids = ds.ref.query(params, ds.orders)
    body = resp.json()
    offset = int([v for k, v in params if k == "offset"][-1]) if any(k == "offset" for k, _ in params) else 0
    assert [j["id"] for j in body["data"]] == want_ids, params
    pagination = dict(body["pagination"])
    token = pagination.pop("next_page_token")
    assert pagination == {"total": want_total, "start": offset, "end": offset + len(want_ids)}
    # A token exactly when rows follow the page (tests/integration/test_page_token_api.py opens them).
    assert (token is not None) == (bool(want_ids) and offset + len(want_ids) < want_total), params
    assert (body["status"], body["message"], body["code"]) == ("success", "OK.", "200")
    assert body["data"] == [ds.rendered(i) for i in want_ids]
    want_range = f"{offset + 1}-{offset + len(want_ids)}/{want_total}" if want_ids else f"0-0/{want_total}"
    assert resp.headers["content-range"] == want_range
    assert resp.headers["access-control-expose-headers"] == "Content-Range, X-Jobreg-Plan, X-Resource-Version"
    return want_ids


# -- 200s ------------------------------------------------------------------------------


@pytest.mark.parametrize("collect_threshold", [0, 3000])
async def test_random_queries_match_reference(dataset: Dataset, collect_threshold: int) -> None:
    settings = msgspec.structs.replace(
        dataset.settings, collect_threshold=collect_threshold, candidate_threshold=collect_threshold, walk_chunk=50
    )
    rng = random.Random(3 + collect_threshold)
    async with AsyncTestClient(create_app(settings)) as c:
        for _ in range(200):
            params = random_query(rng, dataset.ref)
            check_page(dataset, params, await c.get(JOBS, params=params))


async def page_all(c: Client, ds: Dataset, params: list[tuple[str, str]]) -> list[str]:
    ids: list[str] = []
    while True:
        page = [*params, ("limit", "37"), ("offset", str(len(ids)))]
        got = check_page(ds, page, await c.get(JOBS, params=page))
        if not got:
            return ids
        ids += got


@pytest.mark.parametrize("field", ["start_timestamp", "end_timestamp"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_nulls_last_both_directions(client: Client, dataset: Dataset, field: str, direction: str) -> None:
    ids = await page_all(client, dataset, [("order_by", field), ("order_by_direction", direction)])
    jobs = dataset.ref.jobs()
    assert sorted(ids) == sorted(jobs)
    values = [jobs[i][field] for i in ids]
    first_null = values.index(None)
    assert first_null > 0 and all(v is None for v in values[first_null:])
    keyed = [(v, i) for v, i in zip(values[:first_null], ids, strict=False)]
    assert keyed == sorted(keyed, reverse=direction == "DESC")
    nulls = ids[first_null:]
    assert nulls == sorted(nulls, reverse=direction == "DESC")


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_runs_ties_broken_by_id(client: Client, dataset: Dataset, direction: str) -> None:
    ids = await page_all(client, dataset, [("order_by", "runs"), ("order_by_direction", direction)])
    jobs = dataset.ref.jobs()
    keyed = [(jobs[i]["runs"], i) for i in ids]
    assert len({r for r, _ in keyed}) < len(keyed)  # the data has ties
    assert keyed == sorted(keyed, reverse=direction == "DESC")


async def test_offset_past_end_is_an_empty_page(client: Client, dataset: Dataset) -> None:
    total = len(dataset.ref.jobs())
    for params in ([("offset", str(total))], [("offset", "1000000"), ("status", "DONE")]):
        resp = await client.get(JOBS, params=params)
        check_page(dataset, params, resp)
        assert resp.json()["data"] == []
        assert resp.headers["content-range"].startswith("0-0/")
    resp = await client.get(JOBS, params={"offset": str(total)})
    assert resp.json()["pagination"] == {"total": total, "start": total, "end": total, "next_page_token": None}


async def test_unknown_params_ignored_and_defaults(client: Client, dataset: Dataset) -> None:
    resp = await client.get(JOBS, params=[("foo", "bar"), ("page", "-3")])
    ids = check_page(dataset, [], resp)
    assert len(ids) == 100
    assert resp.headers["content-range"] == f"1-100/{len(dataset.ref.jobs())}"


@pytest.mark.parametrize("value", ["True", "False", "true", "false", "1", "0"])
async def test_booleans_accepted(client: Client, dataset: Dataset, value: str) -> None:
    params = [("errors", value)]
    check_page(dataset, params, await client.get(JOBS, params=params))


async def test_naive_and_zoned_datetimes(client: Client, dataset: Dataset) -> None:
    for params in (
        [("start_date", "2026-01-06T00:00:00")],
        [("start_date", "2026-01-06T00:00:00.250000")],
        [("end_date", "2026-01-07")],
        [("start_date", "2026-01-06T02:00:00+02:00"), ("end_date", "2026-01-07T12:00:00Z")],
    ):
        check_page(dataset, params, await client.get(JOBS, params=params))
    naive = await client.get(JOBS, params={"start_date": "2026-01-06T10:00:00"})
    utc = await client.get(JOBS, params={"start_date": "2026-01-06T10:00:00+00:00"})
    assert naive.json() == utc.json()


async def test_repeated_list_params_are_any_of(client: Client, dataset: Dataset) -> None:
    params = [("status", "DONE"), ("status", "ERROR"), ("origin", "CLIENT"), ("origin", "OVH")]
    ids = check_page(dataset, params, await client.get(JOBS, params=params))
    assert ids and {dataset.ref.jobs()[i]["status"] for i in ids} <= {"DONE", "ERROR"}


# -- 422s ------------------------------------------------------------------------------

UUID_A = "11111111-2222-4333-8444-555555555555"
INVALID: list[tuple[list[tuple[str, str]], set[str]]] = [
    ([("status", "FINISHED")], {"status"}),
    ([("status", "DONE"), ("status", "done")], {"status"}),
    ([("origin", "MARS")], {"origin"}),
    ([("order_by_direction", "UP")], {"order_by_direction"}),
    ([("id", "not-a-uuid")], {"id"}),
    ([("id", UUID_A.replace("-", ""))], {"id"}),
    ([("batch_id", "xyz")], {"batch_id"}),
    ([("project_id", UUID_A + "0")], {"project_id"}),
    ([("id__starts_with", "xyz")], {"id__starts_with"}),
    ([("start_date", "yesterday")], {"start_date"}),
    ([("end_date", "2026-02-30T00:00:00")], {"end_date"}),
    ([("end_date", "9999-12-31T23:59:59-23:59")], {"end_date"}),  # year 10000 in UTC: not RFC 3339
    ([("limit", "0")], {"limit"}),
    ([("limit", "101")], {"limit"}),
    ([("limit", "ten")], {"limit"}),
    ([("offset", "-1")], {"offset"}),
    ([("offset", "1.5")], {"offset"}),
    ([("min_runs", "abc")], {"min_runs"}),
    ([("max_runs", "1.5")], {"max_runs"}),
    ([("errors", "maybe")], {"errors"}),
    ([("order_by", "name")], {"order_by"}),
    ([("id", UUID_A)] * 101, {"id"}),
    ([("status", "DONE")] * 101, {"status"}),
    ([("user_id", "u" * 129)], {"user_id"}),
    ([("status", "\xff")], {"status"}),
]


@pytest.mark.parametrize(("params", "bad"), INVALID)
async def test_invalid_params_give_422(client: Client, params: list[tuple[str, str]], bad: set[str]) -> None:
    resp = await client.get(JOBS, params=params)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert {tuple(d["loc"]) for d in detail} == {("query", p) for p in bad}
    assert all(isinstance(d["msg"], str) and d["msg"] and isinstance(d["type"], str) for d in detail)


async def test_every_bad_param_is_named(client: Client) -> None:
    params = [
        ("status", "NOPE"),
        ("origin", "MARS"),
        ("id", "x"),
        ("start_date", "soon"),
        ("limit", "101"),
        ("offset", "-5"),
        ("min_runs", "many"),
        ("errors", "perhaps"),
        ("order_by", "colour"),
        ("batch_id", "nope"),
        ("project_id", UUID_A),  # valid: not named
    ]
    resp = await client.get(JOBS, params=params)
    assert resp.status_code == 422
    named = {tuple(d["loc"]) for d in resp.json()["detail"]}
    assert named == {("query", p) for p, _ in params if p != "project_id"}


# -- one job -----------------------------------------------------------------------------


async def test_get_job_by_id(client: Client, dataset: Dataset) -> None:
    job_id = sorted(dataset.ref.jobs())[5]
    for path_id in (job_id, job_id.upper()):
        resp = await client.get(f"{JOBS}/{path_id}")
        assert resp.status_code == 200
        assert resp.json() == {"status": "success", "message": "OK.", "code": "200", "data": dataset.detail(job_id)}


@pytest.mark.parametrize("job_id", ["00000000-0000-4000-8000-000000000000", ORPHAN])
async def test_get_unknown_job_is_404(client: Client, job_id: str) -> None:
    resp = await client.get(f"{JOBS}/{job_id}")
    assert resp.status_code == 404
    body = resp.json()
    assert body["status"] == "fail" and body["code"] == "404" and body["data"] is None and body["message"]


@pytest.mark.parametrize("job_id", ["abc", UUID_A.replace("-", ""), UUID_A + "0", "{" + UUID_A + "}", UUID_A + "%0A"])
async def test_get_malformed_id_is_422(client: Client, job_id: str) -> None:
    resp = await client.get(f"{JOBS}/{job_id}")
    assert resp.status_code == 422, resp.text
    (detail,) = resp.json()["detail"]
    assert detail["loc"] == ["path", "id"] and detail["msg"] and detail["type"]


# -- framework errors, health and schema -------------------------------------------------


async def test_unknown_route_and_method_are_jsend(client: Client) -> None:
    resp = await client.get("/api/v3/jobs")
    assert resp.status_code == 404
    assert resp.json() == {"status": "fail", "message": "Not Found", "code": "404", "data": None}
    resp = await client.post(JOBS, json={})
    assert resp.status_code == 405
    assert resp.json()["status"] == "fail" and resp.json()["code"] == "405"


async def test_unexpected_error_is_500_without_trace(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first store request settles the services (on a cluster they are rebuilt over its route then).
    assert (await client.get("/healthz")).status_code == 200
    services = client.app.state.services

    async def boom(*_: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services.executor, "list_page", boom)
    resp = await client.get(JOBS)
    assert resp.status_code == 500
    assert resp.json() == {"status": "error", "message": "internal server error", "code": "500", "data": None}
    assert "secret" not in resp.text and "Traceback" not in resp.text


async def test_healthz(settings: Settings, aredis: aioredis.Redis) -> None:
    keys = Keys(settings.prefix)
    async with AsyncTestClient(create_app(settings)) as c:
        resp = await c.get("/healthz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ok", "redis": True, "consumer_lag": 0, "pending": 0, "dead_letters": 0}
        for i in range(5):
            await aredis.xadd(keys.events, {"n": str(i)})
        resp = await c.get("/healthz")
        assert resp.json()["consumer_lag"] == 5  # no group yet: everything is backlog
        await aredis.xgroup_create(keys.events, settings.group, id="0")
        await aredis.xreadgroup(settings.group, "c1", {keys.events: ">"}, count=2)
        await aredis.xadd(keys.dead, {"error": "bad"})
        resp = await c.get("/healthz")
        assert resp.json() == {"status": "ok", "redis": True, "consumer_lag": 3, "pending": 2, "dead_letters": 1}


async def test_openapi_documents_the_query_params(client: Client) -> None:
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200
    paths = resp.json()["paths"]
    assert {"/api/v2/jobs", "/api/v2/jobs/{id}", "/healthz"} <= set(paths)
    params = {p["name"]: p for p in paths["/api/v2/jobs"]["get"]["parameters"]}
    assert set(params) == {
        "order_by",
        "order_by_direction",
        "limit",
        "offset",
        "page_token",
        "id",
        "id__starts_with",
        "batch_id",
        "project_id",
        "user_id",
        "status",
        "origin",
        "min_runs",
        "max_runs",
        "errors",
        "start_date",
        "end_date",
    }
    assert all(p["in"] == "query" and not p["required"] and p.get("description") for p in params.values())
    assert params["status"]["schema"]["oneOf"][0]["items"]["enum"]
    assert "422" in paths["/api/v2/jobs"]["get"]["responses"]


# -- Redis down and back ------------------------------------------------------------------


def restart_redis(server: RedisServer) -> subprocess.Popen[bytes]:
    """Start redis-server again on the same port and data directory (append-only file kept)."""
    args = ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--save", ""]
    args += ["--dir", server.workdir, "--appendonly", "yes", "--appendfsync", "always"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=server.port)
    for _ in range(250):
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    else:
        proc.kill()
        raise RuntimeError("redis-server did not restart")
    probe.close()
    return proc


@pytest.fixture
def flaky_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs a real redis-server to kill and restart")
    server = start_redis_server(appendonly=True, appendfsync="always")
    yield server
    server.stop()


@standalone_only("kills and restarts one redis-server (a cluster master's failover: tests/faults/test_cluster_*)")
async def test_redis_down_gives_503_then_recovers(flaky_redis: RedisServer) -> None:
    traffic = make_traffic(random.Random(5), 30)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    await load(flaky_redis.url, "flaky", traffic, list(ref.jobs()))
    total = len(ref.jobs())
    job_id = next(iter(ref.jobs()))
    settings = load_settings({}, redis_url=flaky_redis.url, prefix="flaky")
    async with AsyncTestClient(create_app(settings)) as c:
        assert (await c.get(JOBS)).json()["pagination"]["total"] == total
        flaky_redis.stop()
        for path in (JOBS, f"{JOBS}/{job_id}", "/healthz", f"{JOBS}?status=DONE&order_by=runs"):
            began = time.monotonic()
            resp = await c.get(path)
            assert resp.status_code == 503, (path, resp.text)
            assert time.monotonic() - began < 3
            assert resp.headers["retry-after"].isdigit()
            assert resp.json() == {
                "status": "error",
                "message": "registry store unavailable, retry shortly",
                "code": "503",
                "data": None,
            }
        flaky_redis.process = restart_redis(flaky_redis)
        resp = await c.get(JOBS)  # same app, same client pool: reconnects by itself
        assert resp.status_code == 200, resp.text
        assert resp.json()["pagination"]["total"] == total
        assert (await c.get(f"{JOBS}/{job_id}")).status_code == 200
        assert (await c.get("/healthz")).status_code == 200
