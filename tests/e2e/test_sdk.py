"""The real pasqal-cloud SDK against a live `jobreg api` server (bearer auth on) backed by a private Redis."""

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
from pasqal_cloud.errors import JobFetchingError
from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
from pasqal_cloud.utils.constants import JobStatus
from pasqal_cloud.utils.filters import JobFilters, PaginationParams

from registry.auth.tokens import mint
from registry.settings import load_settings
from tests.conftest import free_port
from tests.integration.test_api import load
from tests.reference import Reference, make_traffic, render_detail, render_job
from tests.topology import Store, both_topologies

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-sdk-shared-secret-" + "q" * 32
SIGNER = load_settings({}, auth_secret=SECRET)

pytestmark = both_topologies


class StaticToken(TokenProvider):
    """What an SDK user plugs in: a provider handing out a bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self) -> str:
        return self.token


@dataclass
class Live:
    url: str
    ref: Reference
    orders: dict[str, int]
    log: Path


@pytest.fixture(scope="module")
def live(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prefix = f"e2e{os.urandom(4).hex()}"
    traffic = make_traffic(random.Random(23), 800)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    orders = asyncio.run(load(store.url, prefix, traffic, list(ref.jobs())))
    port = free_port()
    env = {
        **os.environ,
        "JOBREG_REDIS_URL": store.url,
        "JOBREG_PREFIX": prefix,
        "JOBREG_LOG_LEVEL": "INFO",  # rejections and access lines are logged: none may hold a token
        "JOBREG_AUTH_SECRET": SECRET,
    }
    log = tmp_path_factory.mktemp("sdk") / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry.ops.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # 2 shared cores: 20 s fell short
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"API server did not come up\n{log.read_text()}")
            time.sleep(0.05)
        yield Live(url, ref, orders, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client(live: Live, token: str) -> PasqalCloudClient:
    return PasqalCloudClient(token_provider=StaticToken(token), endpoints=Endpoints(core=live.url))


@pytest.fixture(scope="module")
def sdk(live: Live) -> PasqalCloudClient:
    """An operator: sees every project, so the reference over all jobs applies."""
    return client(live, mint(SIGNER, "operator", [], admin=True))


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
    assert sdk._client.get_job(job_id) == render_detail(live.ref.jobs()[job_id], live.orders[job_id])


# -- authentication through the SDK --------------------------------------------------------


def test_user_token_sees_only_its_projects(live: Live) -> None:
    jobs = live.ref.jobs()
    projects = sorted({j["project_id"] for j in jobs.values()})
    mine, theirs = projects[0], projects[1]
    user = client(live, mint(SIGNER, "alice", [mine]))
    resp = user.get_jobs(pagination_params=PaginationParams(limit=100))
    visible = sorted((j for j in jobs.values() if j["project_id"] == mine), key=lambda j: (j["created_at"], j["id"]))
    assert resp.total == len(visible) > 100
    assert [j.id for j in resp.results] == [j["id"] for j in reversed(visible)][:100]
    assert {j.project_id for j in resp.results} == {mine}
    # Asking for another project's jobs is not an error, just nothing.
    other = user.get_jobs(filters=JobFilters(project_id=theirs))
    assert (other.total, other.results) == (0, [])
    batch = next(j["batch_id"] for j in jobs.values() if j["project_id"] == theirs)
    assert user._client.get_batch_jobs(batch) == []
    theirs_job = next(j["id"] for j in jobs.values() if j["project_id"] == theirs)
    with pytest.raises(JobFetchingError, match="404"):
        user.get_job(theirs_job)
    mine_job = next(j["id"] for j in jobs.values() if j["project_id"] == mine)
    assert user.get_job(mine_job).id == mine_job


BAD_TOKENS = {
    "garbage": lambda: "not-a-token",
    "wrong secret": lambda: mint(load_settings({}, auth_secret="w" * 40), "alice", [], admin=True),
    "expired": lambda: mint(SIGNER, "alice", [], admin=True, now=int(time.time()) - 86400, ttl_s=60),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_token_gets_the_sdk_usual_http_error(live: Live, kind: str) -> None:
    token = BAD_TOKENS[kind]()
    bad = client(live, token)
    with pytest.raises(JobFetchingError, match="401") as info:
        bad.get_jobs()
    assert token not in str(info.value)
    with pytest.raises(JobFetchingError, match="401"):
        bad.get_job(sorted(live.ref.jobs())[0])
    resp = httpx.get(f"{live.url}/api/v2/jobs", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith('Bearer realm="jobreg"')


def test_server_log_never_holds_a_token(live: Live) -> None:
    tokens = [mint(SIGNER, "alice", [], admin=True), *(make() for make in BAD_TOKENS.values())]
    for token in tokens:
        httpx.get(f"{live.url}/api/v2/jobs", headers={"Authorization": f"Bearer {token}"}, params={"limit": 1})
    deadline = time.monotonic() + 5
    while "rejected GET /api/v2/jobs" not in live.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = live.log.read_text()
    assert "rejected GET /api/v2/jobs: token expired" in text
    assert '"GET /api/v2/jobs?limit=1 HTTP/1.1" 200' in text  # the access log is on
    for token in tokens:
        for part in token.split("."):
            assert part not in text
