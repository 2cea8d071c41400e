"""Case 2, Redis restarts: kill -9 redis-server (AOF, appendfsync everysec and always) during ingest and
during queries. Workers and API reconnect by themselves; the API answers 503, never 500; afterwards the
registry equals the fold of the events Redis kept."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import free_port, start_redis_server
from tests.faults.conftest import need_redis_server, report
from tests.harness import (
    assert_registry_matches,
    cluster,
    drained,
    restart_redis,
    stream_entries,
    text_fields,
    wait_for,
)
from tests.reference import Reference, make_traffic
from tests.topology import standalone_only

N_JOBS = 4_000
CHUNK = 50
OUTAGE_DURING_INGEST_S = 3.0
# Longer than every per-command retry budget of the workers' clients: only the hosts' own backoff helps.
OUTAGE_DURING_QUERIES_S = 8.0

pytestmark = standalone_only(
    "kill -9 and restart of one redis-server with its AOF (a master's failover: test_cluster_worker)"
)


class Backend(threading.Thread):
    """A producer that publishes in chunks and, like any backend should, retries a chunk until Redis acks it."""

    def __init__(self, url: str, stream: str, traffic: list[dict[str, str]]) -> None:
        super().__init__(daemon=True)
        self.url, self.stream, self.traffic = url, stream, traffic
        self.acked: list[str] = []  # entry ids Redis acknowledged
        self.retries = 0
        self.progress = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)
        try:
            for i in range(0, len(self.traffic), CHUNK):
                while True:
                    try:
                        pipe = client.pipeline(transaction=False)
                        for entry in self.traffic[i : i + CHUNK]:
                            pipe.xadd(self.stream, entry)  # type: ignore[arg-type]
                        self.acked += [x.decode() for x in pipe.execute()]
                        break
                    except (redis.ConnectionError, redis.TimeoutError):
                        self.retries += 1  # the reply was lost: part of the chunk may be in; resend it all
                        time.sleep(0.1)
                self.progress = i + CHUNK
                time.sleep(0.02)
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()


class Clients(threading.Thread):
    """API clients querying all the time; every answer's status is counted, 503s are checked as they come."""

    def __init__(self, base_url: str, job_ids: list[str]) -> None:
        super().__init__(daemon=True)
        self.base_url, self.job_ids = base_url, job_ids
        self.codes: Counter[int] = Counter()
        self.bad: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        rng = random.Random(2)
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            while not self.stopping.is_set():
                path = rng.choice(
                    [
                        "/api/v2/jobs?status=DONE&limit=10",
                        "/api/v2/jobs?order_by=updated_at&limit=5",
                        f"/api/v2/jobs/{rng.choice(self.job_ids)}",
                        "/healthz",
                    ]
                )
                try:
                    r = http.get(path)
                except httpx.TransportError as exc:
                    self.bad.append(f"{path}: transport error {exc!r}")
                    continue
                self.codes[r.status_code] += 1
                if r.status_code >= 500:
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                    if r.status_code != 503 or not r.headers.get("retry-after") or "unavailable" not in str(body):
                        self.bad.append(f"{path}: {r.status_code} {r.headers} {r.text[:300]}")
                time.sleep(0.01)


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_redis_killed_during_ingest_and_queries(appendfsync: str, tmp_path: Path) -> None:
    need_redis_server()
    server = start_redis_server(appendonly=True, appendfsync=appendfsync)
    aof = ["--appendonly", "yes", "--appendfsync", appendfsync]
    rng = random.Random(7)
    traffic = make_traffic(rng, N_JOBS, bad_rate=0.0)
    job_ids = sorted({e["job_id"].lower() for e in traffic})
    prefix = f"aof{os.urandom(3).hex()}"
    try:
        with cluster(server.url, prefix, tmp_path, block_ms=200, claim_idle_ms=2000, housekeeping_interval_s=2) as c:
            c.start_worker("a")
            c.start_worker("b")
            c.start_api(free_port())
            keys, group = c.keys, c.settings.group
            backend = Backend(server.url, keys.events, traffic)
            clients = Clients(c.api_url, job_ids)
            clients.start()
            backend.start()

            # Outage 1, mid-ingest.
            wait_for(lambda: backend.progress > len(traffic) // 4, 60, "ingest under way")
            server.stop()  # SIGKILL
            time.sleep(OUTAGE_DURING_INGEST_S)
            during_outage = clients.codes[503]
            restart_redis(server, *aof)
            backend.join(180)
            assert not backend.is_alive() and backend.error is None, backend.error

            # Outage 2, while only queries run (and the workers finish the backlog).
            server.stop()
            time.sleep(OUTAGE_DURING_QUERIES_S)
            restart_redis(server, *aof)
            time.sleep(1.0)
            clients.stopping.set()
            clients.join(30)

            client = redis.Redis.from_url(server.url)
            wait_for(lambda: drained(client, keys, group), 120, "pipeline drained after restarts", c.log_tail)
            c.check_alive()

            # The oracle: the fold of the events Redis kept.
            kept = stream_entries(client, keys.events)
            kept_ids = {eid.decode() for eid, _ in kept}
            ref = Reference()
            for _, fields in kept:
                text = text_fields(fields)
                assert text is not None and ref.add(text)
            jobs = assert_registry_matches(server.url, prefix, ref)
            assert client.xlen(keys.dead) == 0
            lost_acked = [eid for eid in backend.acked if eid not in kept_ids]
            if appendfsync == "always":
                assert not lost_acked, f"{len(lost_acked)} acknowledged publishes lost with appendfsync always"
            assert not clients.bad, clients.bad[:5]
            assert during_outage > 0 and clients.codes[503] > during_outage, clients.codes
            assert clients.codes[200] > 0
            client.close()
            assert "unhandled error" not in c.logs_text("api.log")
            logs = c.logs_text("worker-*.log")
    finally:
        server.stop()
    report(
        f"redis_restarts_{appendfsync}",
        redis_kills=2,
        events_published=len(traffic),
        publish_retries=backend.retries,
        acked_publishes=len(backend.acked),
        acked_lost=len(lost_acked),
        entries_kept=len(kept),
        jobs=jobs,
        http_codes=dict(clients.codes),
        http_500=clients.codes[500],
        worker_outage_warnings=logs.count("redis unavailable"),
        lost=0,
        duplicated=0,
    )
