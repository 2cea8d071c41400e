"""The live endpoints' HTTP edges in-process against a real Redis: positions, 410/422, /metrics, the page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.dashboard import STATIC_DIR
from registry.settings import Settings
from registry.wire.events import decode_event
from tests.conftest import free_port
from tests.topology import both_topologies, load_events, open_registry, stored_partitions, watch_position

Client = AsyncTestClient[Litestar]
WATCH = "/api/v2/jobs/watch"

pytestmark = both_topologies


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(create_app(settings)) as c:
        yield c


async def add_job(settings: Settings, job_id: str) -> None:
    """A job in the registry of ``settings`` (P stamped, as a worker's first start does: 16 on a cluster)."""
    created = {
        "event_id": f"c-{job_id}",
        "type": "created",
        "job_id": job_id,
        "occurred_at": "2026-11-23T10:00:00Z",
        "batch_id": job_id,
        "project_id": job_id,
        "user_id": "ann",
        "runs": "3",
    }
    await load_events(settings.redis_url, settings.prefix, [decode_event(created)])


async def test_list_tells_the_change_log_position(client: Client, settings: Settings) -> None:
    await (await open_registry(settings.redis_url, settings.prefix)).aclose()  # P stamped, nothing logged
    r = await client.get("/api/v2/jobs")
    parts = stored_partitions(settings.redis_url, settings.prefix).count
    assert r.headers["x-resource-version"] == "_".join(["0-0"] * parts)  # nothing logged yet
    await add_job(settings, "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59")
    r = await client.get("/api/v2/jobs", params={"status": "PENDING"})
    position = r.headers["x-resource-version"]
    assert position == watch_position(settings.redis_url, settings.prefix)
    assert position != "_".join(["0-0"] * parts)
    assert "Content-Range" in r.headers["access-control-expose-headers"].split(", ")


@pytest.mark.parametrize(
    ("params", "headers", "loc"),
    [
        ({"resource_version": "yesterday"}, {}, ["query", "resource_version"]),
        ({}, {"Last-Event-ID": "12-ab"}, ["header", "Last-Event-ID"]),
        ({"status": "LOST"}, {}, ["query", "status"]),
        ({"min_runs": "many", "resource_version": "1-0"}, {}, ["query", "min_runs"]),
    ],
)
async def test_watch_rejects_bad_input_with_422(
    client: Client, params: dict[str, str], headers: dict[str, str], loc: list[str]
) -> None:
    r = await client.get(WATCH, params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert [d["loc"] for d in r.json()["detail"]] == [loc]


async def test_watch_from_a_reset_log_is_410(client: Client, settings: Settings) -> None:
    await add_job(settings, "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59")
    parts = stored_partitions(settings.redis_url, settings.prefix).count
    r = await client.get(WATCH, headers={"Last-Event-ID": "_".join(["99999999999999-0"] * parts)})
    assert r.status_code == 410
    assert r.json()["code"] == "410" and "list again" in r.json()["message"]


async def test_metrics_is_prometheus_text(client: Client) -> None:
    await client.get("/api/v2/jobs")
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'jobreg_query_duration_seconds_count{endpoint="/api/v2/jobs"} 1' in r.text
    assert "jobreg_watch_connections 0" in r.text


async def test_dashboard_is_served_without_external_resources(client: Client) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        r = await client.get(asset)
        assert r.status_code == 200, asset
    assert {p.name for p in STATIC_DIR.iterdir()} >= {"index.html", "dashboard.js", "dashboard.css"}
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} loads something from the network"


async def test_live_endpoints_answer_503_while_redis_is_down(settings: Settings) -> None:
    down = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with AsyncTestClient(create_app(down)) as c:
        for path in (WATCH, "/api/v2/jobs/stats", "/metrics"):
            r = await c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["retry-after"]


async def test_metrics_families_keep_their_names_and_have_no_created_series(client: Client) -> None:
    await client.get("/api/v2/jobs/stats")
    text = (await client.get("/metrics")).text
    assert "_created" not in text  # prometheus-client's per-series creation time: not part of our exposition
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types["jobreg_events_consumed_total"] == "counter"
    assert types["jobreg_query_duration_seconds"] == "histogram"
    assert types["jobreg_jobs"] == "gauge"
    assert 'jobreg_query_duration_seconds_bucket{endpoint="/api/v2/jobs/stats",le="0.0005"}' in text
