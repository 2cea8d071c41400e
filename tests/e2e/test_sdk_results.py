"""The SDK's reads of one job (status, results link and download, sequence) against real worker + API processes."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pasqal_cloud.authentication import TokenProvider
from pasqal_cloud.endpoints import Endpoints
from pasqal_cloud.errors import JobFetchingError
from pasqal_cloud.pasqal_cloud_client import PasqalCloudClient
from pasqal_cloud.utils.constants import JobStatus

from registry.auth.tokens import mint
from registry.settings import load_settings
from registry.wire.events import MAX_RESULTS_LINK
from registry.wire.publisher import build_fields
from tests.e2e.stack import Stack, running_stack
from tests.harness import stream_entries, text_fields, wait_for
from tests.topology import Store, both_topologies, stored_partitions

SECRET = "e2e-sdk-results-secret-" + "r" * 32
SIGNER = load_settings({}, auth_secret=SECRET)
MINE, THEIRS = str(uuid.uuid4()), str(uuid.uuid4())
SEQUENCE = json.dumps({"version": "1", "name": "bell", "register": {"q0": [0, 0], "q1": [5, 0]}})
COUNTER = {"00": 412, "11": 388}

pytestmark = both_topologies


class Token(TokenProvider):
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self) -> str:
        return self.token


class _Results(BaseHTTPRequestHandler):
    """Stands in for the object store a backend writes results to (the SDK downloads from it)."""

    documents: dict[str, bytes] = {}  # noqa: RUF012 (set per test server)

    def do_GET(self) -> None:
        body = self.documents.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body or b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def results_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Results)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class Jobs:
    done = str(uuid.uuid4())  # finished, with a results link and a sequence
    running = str(uuid.uuid4())  # started, no results yet, no sequence
    foreign = str(uuid.uuid4())  # another project's finished job


@pytest.fixture(scope="module")
def stack(store: Store, results_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    _Results.documents = {"/results/done.json": json.dumps({"counter": COUNTER, "raw": ["00", "11"]}).encode()}
    logs = tmp_path_factory.mktemp("sdk-results")
    with running_stack(store, logs, env={"JOBREG_AUTH_SECRET": SECRET}) as stack:
        batch = str(uuid.uuid4())

        def created(job: str, project: str, **extra: Any) -> dict[str, str]:
            return build_fields(
                "created",
                job,
                occurred_at="2026-11-23T10:00:00Z",
                batch_id=batch,
                project_id=project,
                user_id="u",
                runs=800,
                **extra,
            )

        link = f"{results_server}/results/done.json"
        stack.publish(
            [
                created(Jobs.done, MINE, sequence=SEQUENCE),
                build_fields("started", Jobs.done, occurred_at="2026-11-23T10:01:00Z"),
                build_fields("finished", Jobs.done, occurred_at="2026-11-23T10:02:00Z", results_link=link),
                created(Jobs.running, MINE),
                build_fields("started", Jobs.running, occurred_at="2026-11-23T10:01:00Z"),
                created(Jobs.foreign, THEIRS),
                build_fields("finished", Jobs.foreign, occurred_at="2026-11-23T10:02:00Z", results_link=link),
            ]
        )
        stack.wait_drained()
        yield stack


def sdk(stack: Stack, *projects: str) -> PasqalCloudClient:
    token = mint(SIGNER, "alice", list(projects), admin=False)
    return PasqalCloudClient(token_provider=Token(token), endpoints=Endpoints(core=stack.url))


def test_status_results_and_sequence_through_the_sdk(stack: Stack) -> None:
    client = sdk(stack, MINE)
    assert client._client.get_job_status(Jobs.done) == {"status": "DONE"}
    assert client.get_job_status(Jobs.done) is JobStatus.DONE
    assert client.get_job_status(Jobs.running) is JobStatus.RUNNING

    job = client.get_job(Jobs.done)
    assert job.full_result is not None
    assert job.full_result["counter"] == COUNTER  # downloaded by the SDK from the link
    assert job.result == COUNTER
    assert job.sequence == SEQUENCE


def test_a_job_without_results(stack: Stack) -> None:
    job = sdk(stack, MINE).get_job(Jobs.running)
    assert job.full_result is None
    assert job.result is None
    assert job.sequence is None


def test_another_projects_job_is_the_same_404_as_a_missing_one(stack: Stack) -> None:
    client = sdk(stack, MINE)
    for path in ("/api/v1/jobs/{}/status", "/api/v1/jobs/{}/results_link", "/api/v2/jobs/{}"):
        token = mint(SIGNER, "alice", [MINE], admin=False)
        headers = {"Authorization": f"Bearer {token}"}
        foreign = httpx.get(stack.url + path.format(Jobs.foreign), headers=headers)
        missing = httpx.get(stack.url + path.format(uuid.uuid4()), headers=headers)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.content.replace(Jobs.foreign.encode(), b"X") == missing.content.replace(
            missing.url.path.split("/")[4].encode(), b"X"
        )
    with pytest.raises(JobFetchingError):
        client.get_job_status(Jobs.foreign)
    # The owner sees it.
    assert sdk(stack, THEIRS).get_job_status(Jobs.foreign) is JobStatus.DONE


def test_list_leaves_results_out_single_job_and_watch_carry_the_link(stack: Stack, results_server: str) -> None:
    token = mint(SIGNER, "alice", [MINE], admin=False)
    headers = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{stack.url}/api/v2/jobs", headers=headers).json()["data"]
    assert {j["id"] for j in listed} == {Jobs.done, Jobs.running}
    assert all("results_link" not in j and "sequence" not in j for j in listed)
    one = httpx.get(f"{stack.url}/api/v2/jobs/{Jobs.done}", headers=headers).json()["data"]
    assert one["results_link"] == f"{results_server}/results/done.json"
    assert one["sequence"] == SEQUENCE
    assert httpx.get(f"{stack.url}/api/v1/jobs/{Jobs.running}/results_link", headers=headers).json() == {
        "status": "success",
        "message": "OK.",
        "code": "200",
        "data": {"results_link": None},
    }
    origin = "_".join(["0-0"] * stored_partitions(stack.redis_url, stack.prefix).count)  # one per partition
    with httpx.stream(
        "GET", f"{stack.url}/api/v2/jobs/watch", params={"resource_version": origin}, headers=headers, timeout=10
    ) as stream:
        seen: dict[str, Any] = {}
        for line in stream.iter_lines():
            if line.startswith("data: "):
                job = json.loads(line[6:])["job"]
                seen[job["id"]] = job
                if len(seen) == 2 and seen[Jobs.done]["status"] == "DONE":
                    break
    assert seen[Jobs.done]["results_link"] == f"{results_server}/results/done.json"
    assert seen[Jobs.running]["results_link"] is None


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("ftp://example.com/r.json", "not an absolute http(s) URL"),
        ("/results/r.json", "not an absolute http(s) URL"),
        ("https://", "not an absolute http(s) URL"),
        ("https://example.com/a b", "not an absolute http(s) URL"),
        ("https://example.com/\u00e9", "not an absolute http(s) URL"),
        ("javascript:alert(1)", "not an absolute http(s) URL"),
        ("https://example.com/" + "a" * MAX_RESULTS_LINK, "results_link longer than"),
    ],
)
def test_malformed_links_are_dead_lettered(stack: Stack, link: str, reason: str) -> None:
    job = str(uuid.uuid4())
    raw = {
        "event_id": str(uuid.uuid4()),
        "type": "finished",
        "job_id": job,
        "occurred_at": "2026-11-23T10:02:00Z",
        "results_link": link,
    }
    (entry_id,) = stack.publish([raw])
    client = stack.redis()
    try:

        def dead() -> dict[str, str] | None:
            for _, fields in stream_entries(client, stack.keys.dead):
                text = text_fields(fields)
                if text and text.get("source_id") == entry_id:
                    return text
            return None

        wait_for(lambda: dead() is not None, 30, "dead letter", stack.log_tail)
        letter = dead()
        assert letter is not None
        assert reason in letter["error"]
        assert letter["results_link"] == link  # the original value kept for a fix and replay
    finally:
        client.close()
