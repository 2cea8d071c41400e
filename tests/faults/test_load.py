"""Case 7, under load: 5,000 events/s while clients query at 200 requests/s. Zero errors, the consumer lag
back to zero after the burst, and the registry equal to the fold; query p99 (idle and under load) reported.

The default run keeps the burst short (CI shares 2 cores with the whole suite); JOBREG_FAULTS_FULL=1 runs
the full 60 s. Both phases run the same open-loop query schedule, and latency counts from each request's
scheduled start, so a stalled server cannot hide behind fewer requests (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import redis.asyncio as aioredis

from tests.conftest import RedisServer, free_port
from tests.faults.conftest import FULL, report
from tests.harness import assert_registry_matches, cluster, drained, publish, wait_for
from tests.reference import Reference
from tests.topology import standalone_only

# The figures in the full run; the default run is scaled to what 2 shared cores sustain beside the
# rest of the suite. JOBREG_LOAD_RATE / _QPS / _SECONDS override either.
RATE = int(os.environ.get("JOBREG_LOAD_RATE", 5_000 if FULL else 2_000))  # events/s
QPS = int(os.environ.get("JOBREG_LOAD_QPS", 200 if FULL else 100))
BURST_S = float(os.environ.get("JOBREG_LOAD_SECONDS", 60 if FULL else 10))
IDLE_S = 15.0 if FULL else 10.0
PRELOAD_JOBS = 20_000
TICK_S = 0.01
RECOVER_S = 5.0

pytestmark = standalone_only(
    "timed load on one server; the cluster's load figures are the benchmarks' (docs/scaling.md)"
)


class Traffic:
    """A steady stream of job lifecycles: created, then started and finished a few hundred jobs later."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.projects = [str(uuid.UUID(int=self.rng.getrandbits(128), version=4)) for _ in range(20)]
        self.batches = [(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)), p) for p in self.projects * 10]
        self.users = [f"user{i}" for i in range(50)]
        self.jobs: list[str] = []
        self.known = 0  # jobs certainly in the registry (looked up by id)
        self.t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def _event(self, etype: str, job: int, **extra: str) -> dict[str, str]:
        at = self.t0 + timedelta(milliseconds=job * 10 + {"created": 0, "started": 1000}.get(etype, 5000))
        return {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "type": etype,
            "job_id": self.jobs[job],
            "occurred_at": at.isoformat(),
            **extra,
        }

    def events(self, n_jobs: int) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        start = len(self.jobs)
        for k in range(start, start + n_jobs):
            self.jobs.append(str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
            batch, project = self.rng.choice(self.batches)
            out.append(
                self._event(
                    "created",
                    k,
                    batch_id=batch,
                    project_id=project,
                    user_id=self.rng.choice(self.users),
                    runs=str(self.rng.choice((1, 10, 100, 500))),
                    origin=self.rng.choice(("CLIENT", "AZURE", "OVH")),
                )
            )
            if k - 300 >= start:
                out.append(self._event("started", k - 300))
            if k - 600 >= start:
                kind = "failed" if self.rng.random() < 0.1 else "finished"
                out.append(self._event(kind, k - 600, **({"errors": '["QPU fault"]'} if kind == "failed" else {})))
        return out

    def query(self) -> str:
        r = self.rng
        shapes = [
            "/api/v2/jobs?limit=100",
            f"/api/v2/jobs?status={r.choice(('DONE', 'RUNNING', 'PENDING', 'ERROR'))}&limit=20",
            f"/api/v2/jobs?project_id={r.choice(self.projects)}&status=DONE&limit=50",
            f"/api/v2/jobs?batch_id={r.choice(self.batches)[0]}&order_by=creation_order&order_by_direction=ASC",
            f"/api/v2/jobs?user_id={r.choice(self.users)}&order_by=updated_at&limit=10",
            f"/api/v2/jobs/{self.jobs[r.randrange(self.known)]}",
        ]
        return r.choice(shapes)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its children (the API's processes) have used so far."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(k) for k in children.read_text().split()] if children.exists() else []
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(_cpu_s(k) for k in kids)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Http:
    """A minimal keep-alive HTTP/1.1 GET client: a tenth of httpx's CPU per request, so that on 2 cores the
    load driver takes as little as possible from the system it measures."""

    def __init__(self, base_url: str, size: int = 64) -> None:
        self.host, port = base_url.removeprefix("http://").split(":")
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.all: list[asyncio.StreamWriter] = []

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.idle:
            try:
                return await self._get(self.idle.pop(), path)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the server closed that idle keep-alive connection meanwhile: use a new one
        return await self._get(await self._connect(), path)

    async def _get(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], path: str) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        self.idle.append(conn)
        return status, body

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.all.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.all:
            writer.close()


async def _queries(base_url: str, traffic: Traffic, seconds: float) -> tuple[list[float], Counter[str]]:
    """Open loop: one request every 1/QPS s whatever the previous ones do; latency from the scheduled start."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    http = Http(base_url)

    async def one(path: str, scheduled: float) -> None:
        try:
            status, _ = await asyncio.wait_for(http.get(path), 30)
            outcomes[str(status)] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, StopIteration) as exc:
            outcomes[type(exc).__name__] += 1
        latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter()
    tasks = []
    try:
        for i in range(int(seconds * QPS)):
            scheduled = start + i / QPS
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(traffic.query(), scheduled)))
        await asyncio.gather(*tasks)
    finally:
        await http.close()
    return latencies, outcomes


async def _until_quiet(base_url: str, traffic: Traffic, fast_s: float, timeout_s: float = 120) -> float:
    """Seconds until 10 sequential queries in a row each answer within ``fast_s``."""
    http = Http(base_url)
    start = time.perf_counter()
    streak = 0
    try:
        while streak < 10 and time.perf_counter() - start < timeout_s:
            sent = time.perf_counter()
            await http.get(traffic.query())
            streak = streak + 1 if time.perf_counter() - sent <= fast_s else 0
    finally:
        await http.close()
    return time.perf_counter() - start


async def _publish(url: str, stream: str, events: list[dict[str, str]], seconds: float) -> float:
    """Publish ``events`` at RATE/s in TICK_S slices (catching up if late); return the achieved rate."""
    client = aioredis.Redis.from_url(url)
    per_tick = int(RATE * TICK_S)
    start = time.perf_counter()
    sent = 0
    try:
        for i, offset in enumerate(range(0, min(len(events), int(RATE * seconds)), per_tick)):
            await asyncio.sleep(max(0.0, start + i * TICK_S - time.perf_counter()))
            pipe = client.pipeline(transaction=False)
            for entry in events[offset : offset + per_tick]:
                pipe.xadd(stream, entry)
            sent += len(await pipe.execute())
    finally:
        await client.aclose()
    return sent / (time.perf_counter() - start)


def test_ingest_and_queries_under_load(own_redis: RedisServer, tmp_path: Path) -> None:
    traffic = Traffic(seed=7)
    preload = traffic.events(PRELOAD_JOBS)
    traffic.known = PRELOAD_JOBS
    burst = traffic.events(int(RATE * BURST_S / 3) + 1)[: int(RATE * BURST_S)]
    ref = Reference()
    for entry in [*preload, *burst]:
        ref.add(entry)
    prefix = f"load{os.urandom(3).hex()}"
    client = redis.Redis.from_url(own_redis.url)
    # Ingest yields the CPU to queries (JOBREG_WORKER_NICE): a burst waits in the stream, not in clients.
    with cluster(own_redis.url, prefix, tmp_path, block_ms=100, batch_size=500, worker_nice=10) as c:
        c.start_worker("a")
        c.start_worker("b")
        c.start_api(free_port())
        keys, group = c.keys, c.settings.group
        publish(client, keys.events, preload, chunk=1000)
        wait_for(lambda: drained(client, keys, group), 120, "preload ingested", c.log_tail)

        idle, idle_outcomes = asyncio.run(_queries(c.api_url, traffic, IDLE_S))

        async def burst_phase() -> tuple[float, list[float], Counter[str]]:
            rate, (lat, outcomes) = await asyncio.gather(
                _publish(own_redis.url, keys.events, burst, BURST_S), _queries(c.api_url, traffic, BURST_S)
            )
            return rate, lat, outcomes

        procs = {"redis": own_redis.process, "api": c.api, **{f"worker {n}": p for n, p in c.workers.items()}}
        before = {name: _cpu_s(p.pid) for name, p in procs.items() if p is not None}
        started = time.perf_counter()
        rate, loaded, outcomes = asyncio.run(burst_phase())
        elapsed = time.perf_counter() - started
        # Where the 2 cores went during the burst (share of one core per process).
        cpu = {name: round((_cpu_s(p.pid) - before[name]) / elapsed, 2) for name, p in procs.items() if p}
        backlog_at_end = client.xinfo_groups(keys.events)[0]["lag"]  # type: ignore[index]
        recover_s = wait_for(lambda: drained(client, keys, group), 120, "lag back to zero", c.log_tail)
        # Idle again, now over the registry grown by the burst: the baseline for its data size. Only once
        # the API has worked off requests its clients gave up on (the server still answers those).
        quiet_s = asyncio.run(_until_quiet(c.api_url, traffic, 3 * max(_p(idle, 0.5), 0.002)))
        idle_after, after_outcomes = asyncio.run(_queries(c.api_url, traffic, IDLE_S))
        idle_outcomes += after_outcomes
        c.check_alive()
        jobs = assert_registry_matches(own_redis.url, prefix, ref)
        assert client.xlen(keys.dead) == 0
    client.close()

    # The burst grows the registry by a third; the idle baseline is the slower of before and after it, so
    # what is compared is the effect of concurrent ingest, not of the larger data set.
    p99_idle, p99_load = max(_p(idle, 0.99), _p(idle_after, 0.99)), _p(loaded, 0.99)
    figures = {
        "burst_s": BURST_S,
        "events_per_s_target": RATE,
        "events_per_s_achieved": round(rate),
        "events_published": len(preload) + len(burst),
        "queries_per_s": QPS,
        "queries_idle": len(idle),
        "queries_under_load": len(loaded),
        "p50_idle_ms": round(_p(idle, 0.5) * 1000, 1),
        "p99_idle_before_ms": round(_p(idle, 0.99) * 1000, 1),
        "p99_idle_after_ms": round(_p(idle_after, 0.99) * 1000, 1),
        "p50_load_ms": round(_p(loaded, 0.5) * 1000, 1),
        "p99_load_ms": round(p99_load * 1000, 1),
        "p99_load_over_idle": round(p99_load / p99_idle, 2) if p99_idle else None,
        "backlog_at_burst_end": backlog_at_end,
        "lag_recovered_s": round(recover_s, 2),
        "cpu_cores_during_burst": cpu,
        "api_quiet_after_s": round(quiet_s, 1),
        "jobs": jobs,
        "errors": sum(n for k, n in (outcomes + idle_outcomes).items() if k not in ("200", "404")),
    }
    report("load", **figures)
    assert set(idle_outcomes) <= {"200"} and set(outcomes) <= {"200"}, (idle_outcomes, outcomes)
    assert rate >= 0.95 * RATE, f"the load driver only reached {rate:.0f} events/s: the test measured nothing"
    # Latency under load (p99 within 2x of idle) and how fast the lag recovers are measured and reported
    # above, not asserted: on a shared machine they measure the neighbours. The targets are checked by
    # tests/benchmarks; the full-length run (JOBREG_FAULTS_FULL=1, on a quiet machine) still holds recovery.
    if FULL:
        assert recover_s <= RECOVER_S, figures
