"""Live measurements against running processes: visibility lag while events stream in, and
the requests/s one API process serves under concurrent load.

Used by ``tests.benchmarks.run``; each function expects a ``worker`` and an ``api`` process
already running on the key prefix it is given.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import redis

from registry.keys import Keys
from tests.benchmarks.datagen import iter_jobs, job_events, make_plan
from tests.benchmarks.pg_only import percentile


@dataclass
class Lag:
    rate: float  # events/s actually published
    samples: list[float]  # ms from XADD to the job being visible over HTTP
    published: int


def measure_lag(redis_url: str, prefix: str, base: str, rate: int, seconds: float, seed: int) -> Lag:
    """Publish new jobs' events at ``rate`` events/s; time how soon every 25th job is visible.

    A publisher thread XADDs in 10 ms ticks; each sampled job's ``created`` event starts an
    async poller that asks ``GET /api/v2/jobs/{id}`` every 2 ms until it answers 200.
    """
    stream = Keys(prefix).events
    plan = make_plan(max(1000, int(rate * seconds) // 2), seed)
    sampled: list[tuple[str, float]] = []
    lock = threading.Lock()
    done = threading.Event()
    published = 0

    def publish() -> None:
        nonlocal published
        r = redis.Redis.from_url(redis_url)
        events = (
            (job["id"], i, fields)
            for chunk in iter_jobs(plan, chunk_size=1000)
            for i, job in enumerate(chunk)
            for fields in job_events(job)
        )
        tick, per_tick = 0.01, max(1, round(rate * 0.01))
        t0 = time.perf_counter()
        n = 0
        try:
            while time.perf_counter() - t0 < seconds:
                pipe = r.pipeline(transaction=False)
                marks = []
                for _ in range(per_tick):
                    job_id, i, fields = next(events)
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                    if fields["type"] == "created" and i % 25 == 0:
                        marks.append(job_id)
                n += per_tick
                pipe.execute()
                now = time.perf_counter()
                with lock:
                    sampled.extend((job_id, now) for job_id in marks)
                n_ticks = n / per_tick
                sleep = t0 + n_ticks * tick - time.perf_counter()
                if sleep > 0:
                    time.sleep(sleep)
        except StopIteration:
            pass
        finally:
            published = n
            r.close()
            done.set()

    async def poll_all() -> list[float]:
        lags: list[float] = []
        taken = 0
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            tasks: list[asyncio.Task[None]] = []

            async def poll(job_id: str, t_pub: float) -> None:
                while True:
                    response = await http.get(f"/api/v2/jobs/{job_id}")
                    if response.status_code == 200:
                        lags.append((time.perf_counter() - t_pub) * 1e3)
                        return
                    if time.perf_counter() - t_pub > 30:
                        lags.append(float("inf"))
                        return
                    await asyncio.sleep(0.002)

            while not done.is_set() or taken < len(sampled):
                with lock:
                    fresh = sampled[taken:]
                    taken = len(sampled)
                tasks += [asyncio.create_task(poll(j, t)) for j, t in fresh]
                await asyncio.sleep(0.002)
            await asyncio.gather(*tasks)
        return lags

    thread = threading.Thread(target=publish, daemon=True)
    t_start = time.perf_counter()
    thread.start()
    lags = asyncio.run(poll_all())
    thread.join()
    return Lag(rate=published / (time.perf_counter() - t_start), samples=lags, published=published)


def lag_line(lag: Lag) -> str:
    finite = [x for x in lag.samples if x != float("inf")]
    lost = len(lag.samples) - len(finite)
    if not finite:
        return "visibility lag: no samples"
    return (
        f"visibility lag (XADD -> GET /api/v2/jobs/{{id}} answers 200), {lag.published:,} events at "
        f"{lag.rate:,.0f} events/s, {len(finite)} sampled jobs: p50 {percentile(finite, 50):.1f} ms, "
        f"p99 {percentile(finite, 99):.1f} ms, max {max(finite):.1f} ms" + (f", {lost} never visible" if lost else "")
    )


def measure_rps(base: str, params: Sequence[tuple[str, str]], seconds: int = 10, connections: int = 32) -> str:
    """Requests/s of one API process on one query, with wrk when installed, else an async client."""
    url = f"{base}/api/v2/jobs?{urlencode(list(params))}"
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"50%\s+([\d.]+\w+)", out)
        p99 = re.search(r"99%\s+([\d.]+\w+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return (
            f"wrk -t2 -c{connections} -d{seconds}s: {float(rps.group(1)) if rps else 0:,.0f} requests/s, "
            f"latency p50 {p50.group(1) if p50 else '?'}, p99 {p99.group(1) if p99 else '?'}, "
            f"non-2xx {errors.group(1) if errors else 0}"
        )

    async def run() -> tuple[int, int]:
        ok = bad = 0
        deadline = time.perf_counter() + seconds
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=connections)) as http:

            async def client() -> None:
                nonlocal ok, bad
                while time.perf_counter() < deadline:
                    response = await http.get(url)
                    if response.status_code == 200:
                        ok += 1
                    else:
                        bad += 1

            await asyncio.gather(*[client() for _ in range(connections)])
        return ok, bad

    ok, bad = asyncio.run(run())
    return f"async client, {connections} connections, {seconds} s: {ok / seconds:,.0f} requests/s, {bad} errors"
