"""End to end over real processes and sockets: raw XADD -> two `jobreg worker`s -> `jobreg api` -> HTTP.

Checks the dead-letter stream, the query API against the independent reference, single-job
lookups, idempotence under a full redelivery, and a clean SIGTERM shutdown of the workers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import free_port
from tests.harness import healthy, jobreg, publish, spawn, stop, wait_for
from tests.reference import Reference, make_traffic, random_query, render_detail, render_job
from tests.topology import Store, both_topologies, sync_client

pytestmark = both_topologies

SEED = 4242
N_JOBS = 600
N_QUERIES = 300
DRAIN_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 15.0


@dataclass
class Cluster:
    url: str
    prefix: str
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None

    def log_tail(self, n: int = 4000) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        for proc in [*self.workers, self.api]:
            assert proc is not None and proc.poll() is None, f"a process died early\n{self.log_tail()}"


@pytest.fixture
def cluster(store: Store, tmp_path: Path) -> Iterator[Cluster]:
    prefix = f"e2e{os.urandom(3).hex()}"
    port = free_port()
    env = {
        **os.environ,
        "JOBREG_REDIS_URL": store.url,
        "JOBREG_PREFIX": prefix,
        "JOBREG_LOG_LEVEL": "INFO",
    }
    c = Cluster(f"http://127.0.0.1:{port}", prefix, env, tmp_path)
    try:
        c.workers = [spawn(["worker"], env, tmp_path / f"worker{i}.log") for i in range(2)]
        c.api = spawn(["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"], env, tmp_path / "api.log")
        wait_for(lambda: (c.check_alive(), healthy(c.url))[1], 30, "API up", c.log_tail)
        yield c
    finally:
        for proc in [*c.workers, c.api]:
            stop(proc)  # the whole process group: `jobreg api`'s forked servers too
        print(c.log_tail())  # shown by pytest only when the test fails


def _drain(c: Cluster, http: httpx.Client, expected_dead: int) -> dict[str, Any]:
    """Wait until every published entry is delivered and acknowledged (and the dead letters are in)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        c.check_alive()
        r = http.get("/healthz")
        if r.status_code == 200:
            health = r.json()
            if health["consumer_lag"] == 0 and health["pending"] == 0 and health["dead_letters"] >= expected_dead:
                return health
        time.sleep(0.1)
    raise AssertionError(f"not drained within {DRAIN_TIMEOUT_S}s: {health}\n{c.log_tail()}")


def _all_jobs(http: httpx.Client) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    while True:
        r = http.get(
            "/api/v2/jobs",
            params=[
                ("order_by", "creation_order"),
                ("order_by_direction", "ASC"),
                ("limit", "100"),
                ("offset", str(len(jobs))),
            ],
        )
        assert r.status_code == 200, r.text
        page = r.json()["data"]
        if not page:
            return jobs
        jobs += page


def _check_dead_letters(
    client: redis.Redis, dead_stream: str, expected: dict[str, dict[str, str]]
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    rows: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(dead_stream)  # type: ignore[assignment]
    got: dict[str, dict[str, str]] = {}
    for _, raw in rows:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        assert fields.get("error"), fields
        source = fields.pop("source_id")
        fields.pop("error")
        assert source not in got, f"entry {source} dead-lettered twice"
        got[source] = fields
    assert got.keys() == expected.keys()
    for source, fields in expected.items():
        assert got[source] == fields, source
    return rows


def _expected_range(start: int, end: int, total: int) -> str:
    return f"{start + 1}-{end}/{total}" if end > start else f"0-0/{total}"


def test_pipeline(cluster: Cluster) -> None:
    c = cluster
    traffic = make_traffic(random.Random(SEED), N_JOBS)
    ref = Reference()
    valid = [ref.add(entry) for entry in traffic]
    assert 0 < ref.invalid < len(traffic)

    events_stream, dead_stream = f"{c.prefix}:events", f"{c.prefix}:events:dead"
    client = sync_client(c.env["JOBREG_REDIS_URL"])
    http = httpx.Client(base_url=c.url, timeout=10)
    try:
        entry_ids = publish(client, events_stream, traffic)
        _drain(c, http, ref.invalid)

        # (a) dead letters: exactly the entries the reference rejects, with reason, source and originals.
        expected_dead = {eid: entry for eid, entry, ok in zip(entry_ids, traffic, valid, strict=True) if not ok}
        dead_rows = _check_dead_letters(client, dead_stream, expected_dead)
        assert len(dead_rows) == ref.invalid
        cli = jobreg("dead-letters", "--json", "--count", "100000", env=c.env)
        assert cli.returncode == 0, cli.stderr
        listed = [json.loads(line) for line in cli.stdout.splitlines() if line.strip()]
        assert {d["source_id"] for d in listed} == expected_dead.keys()
        for d in listed:
            assert d["error"]
            assert d["fields"] == expected_dead[d["source_id"]]
        plain = jobreg("dead-letters", "--count", "100000", env=c.env)
        assert plain.returncode == 0, plain.stderr
        for source in expected_dead:
            assert f"source={source}" in plain.stdout

        # creation_order from the API itself: every job exactly once, unique values.
        jobs = _all_jobs(http)
        creation_order = {j["id"]: j["creation_order"] for j in jobs}
        assert len(creation_order) == len(jobs), "a job is listed twice"
        assert len(set(creation_order.values())) == len(jobs), "creation_order values are not unique"
        assert creation_order.keys() == ref.jobs().keys()
        assert [j["creation_order"] for j in jobs] == sorted(creation_order.values())
        for j in jobs:
            assert j == render_job(ref.jobs()[j["id"]], creation_order[j["id"]])

        # (b) random queries against the reference.
        rng = random.Random(SEED + 1)
        for _ in range(N_QUERIES):
            params = random_query(rng, ref)
            r = http.get("/api/v2/jobs", params=list[tuple[str, Any]](params))
            assert r.status_code == 200, (params, r.text)
            body = r.json()
            total, ids = ref.query(params, creation_order)
            got_ids = [j["id"] for j in body["data"]]
            assert (body["pagination"]["total"], got_ids) == (total, ids), params
            offset = int(dict(params).get("offset", "0"))
            paging = {k: body["pagination"][k] for k in ("total", "start", "end")}
            assert paging == {"total": total, "start": offset, "end": offset + len(ids)}, params
            assert r.headers["content-range"] == _expected_range(offset, offset + len(ids), total), params
            assert "Content-Range" in r.headers.get("access-control-expose-headers", "")
            assert (body["status"], body["code"]) == ("success", "200")
            for j in body["data"]:
                assert j == render_job(ref.jobs()[j["id"]], creation_order[j["id"]]), params

        # (c) single-job lookups.
        for job_id in random.Random(SEED + 2).sample(sorted(ref.jobs()), 10):
            r = http.get(f"/api/v2/jobs/{job_id}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["status"], body["code"]) == ("success", "200")
            assert body["data"] == render_detail(ref.jobs()[job_id], creation_order[job_id])
        r = http.get(f"/api/v2/jobs/{uuid.UUID(int=random.Random(SEED + 3).getrandbits(128), version=4)}")
        assert r.status_code == 404, r.text
        assert r.json()["data"] is None
        assert http.get("/api/v2/jobs/not-a-uuid").status_code == 422

        # (d) full redelivery: everything again as new stream entries; jobs unchanged, malformed dead again.
        entry_ids_2 = publish(client, events_stream, traffic)
        _drain(c, http, 2 * ref.invalid)
        expected_dead.update({eid: entry for eid, entry, ok in zip(entry_ids_2, traffic, valid, strict=True) if not ok})
        assert len(_check_dead_letters(client, dead_stream, expected_dead)) == 2 * ref.invalid
        assert _all_jobs(http) == jobs

        # Shutdown: SIGTERM, the workers finish and exit 0.
        c.check_alive()
        for proc in [*c.workers, c.api]:
            assert proc is not None
            proc.send_signal(signal.SIGTERM)
        for proc in c.workers:
            try:
                code = proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker did not exit within {EXIT_TIMEOUT_S}s of SIGTERM\n{c.log_tail()}")
            assert code == 0, f"worker exited with {code}\n{c.log_tail()}"
        assert c.api is not None
        c.api.wait(timeout=EXIT_TIMEOUT_S)
    finally:
        http.close()
        client.close()
