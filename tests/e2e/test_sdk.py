"""The real pasqal-cloud SDK against a live `run_api` uvicorn server backed by a private Redis."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pasqal_cloud.authentication import TokenProvider
from pasqal_cloud.endpoints import Endpoints
from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
from pasqal_cloud.utils.constants import JobStatus
from pasqal_cloud.utils.filters import JobFilters, PaginationParams

from tests.conftest import RedisServer, free_port
from tests.integration.test_api import load
from tests.reference import Reference, make_traffic, render_job

ROOT = Path(__file__).resolve().parents[2]


class DevToken(TokenProvider):
    def get_token(self) -> str:
        return "dev-token"


@dataclass
class Live:
    url: str
    ref: Reference
    orders: dict[str, int]


@pytest.fixture(scope="module")
def live(redis_server: RedisServer) -> Iterator[Live]:
    prefix = f"e2e{os.urandom(4).hex()}"
    traffic = make_traffic(random.Random(23), 800)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    orders = asyncio.run(load(redis_server.url, prefix, traffic, list(ref.jobs())))
    port = free_port()
    env = {**os.environ, "JOBREG_REDIS_URL": redis_server.url, "JOBREG_PREFIX": prefix, "JOBREG_LOG_LEVEL": "WARNING"}
    code = (
        "from api.server import run_api; from registry.settings import load_settings; "
        f"run_api(load_settings(), '127.0.0.1', {port})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("API server did not come up")
            time.sleep(0.05)
        yield Live(url, ref, orders)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def sdk(live: Live) -> PasqalCloudClient:
    return PasqalCloudClient(token_provider=DevToken(), endpoints=Endpoints(core=live.url))


def params_of(filters: dict[str, Any], offset: int, limit: int) -> list[tuple[str, str]]:
    """The query the SDK sends for these filters, as the reference reads it."""
    out: list[tuple[str, str]] = []
    for name, value in filters.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, JobStatus):
                v = v.value
            elif isinstance(v, datetime):
                v = v.isoformat()
            out.append((name, str(v).lower() if isinstance(v, bool) else str(v)))
    return [*out, ("offset", str(offset)), ("limit", str(limit))]


def some(live: Live, field: str) -> Any:
    return sorted(j[field] for j in live.ref.jobs().values())[len(live.ref.jobs()) // 2]


def cases(live: Live) -> list[dict[str, Any]]:
    return [
        {},
        {"status": [JobStatus.DONE, JobStatus.ERROR]},
        {"status": JobStatus.PENDING},
        {"project_id": some(live, "project_id")},
        {"errors": True},
        {"errors": False, "status": JobStatus.DONE},
        {"start_date": datetime(2026, 1, 6, 12, 0, 0)},
        {"end_date": datetime(2026, 1, 7, 0, 0, 0, 500)},
        {"min_runs": 100},
        {"min_runs": 10, "max_runs": 500, "user_id": ["alice", "bob"]},
        {"batch_id": [some(live, "batch_id")], "status": [JobStatus.RUNNING, JobStatus.CANCELED]},
        {"id": sorted(live.ref.jobs())[:7]},
    ]


@pytest.mark.parametrize("case", range(12))
@pytest.mark.parametrize(("offset", "limit"), [(0, 100), (5, 20)])
def test_get_jobs_with_filters(sdk: PasqalCloudClient, live: Live, case: int, offset: int, limit: int) -> None:
    filters = cases(live)[case]
    resp = sdk.get_jobs(filters=JobFilters(**filters), pagination_params=PaginationParams(offset=offset, limit=limit))
    want_total, want_ids = live.ref.query(params_of(filters, offset, limit), live.orders)
    assert resp.total == want_total
    assert resp.offset == offset
    assert [j.id for j in resp.results] == want_ids
    assert want_total > 0 or case == 11


def test_sdk_jobs_have_the_right_fields(sdk: PasqalCloudClient, live: Live) -> None:
    resp = sdk.get_jobs(filters=JobFilters(status=[JobStatus.ERROR]), pagination_params=PaginationParams(limit=50))
    assert resp.results
    for job in resp.results:
        want = render_job(live.ref.jobs()[job.id], live.orders[job.id])
        for field in (
            "id",
            "batch_id",
            "project_id",
            "status",
            "runs",
            "errors",
            "variables",
            "parent_id",
            "created_at",
            "updated_at",
            "start_timestamp",
            "end_timestamp",
        ):
            assert getattr(job, field) == want[field], field
        extra = job.model_extra or {}
        assert extra["creation_order"] == want["creation_order"]
        assert extra["user_id"] == want["user_id"] and extra["origin"] == want["origin"]


def test_get_batch_jobs_pages_through_in_creation_order(sdk: PasqalCloudClient, live: Live) -> None:
    jobs = live.ref.jobs().values()
    batches: dict[str, list[str]] = {}
    for job in jobs:
        batches.setdefault(job["batch_id"], []).append(job["id"])
    batch_id, ids = max(batches.items(), key=lambda kv: len(kv[1]))
    assert len(ids) > 100  # the SDK must fetch more than one page
    got = sdk._client.get_batch_jobs(batch_id)
    assert [j["id"] for j in got] == sorted(ids, key=lambda i: live.orders[i])
    assert got == [render_job(live.ref.jobs()[i], live.orders[i]) for i in sorted(ids, key=lambda i: live.orders[i])]


def test_get_single_job(sdk: PasqalCloudClient, live: Live) -> None:
    job_id = sorted(live.ref.jobs())[3]
    assert sdk._client.get_job(job_id) == render_job(live.ref.jobs()[job_id], live.orders[job_id])
