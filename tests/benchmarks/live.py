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
    samples: list[float]  # ms from XADD to the job being listed over HTTP (inf: never seen listed)
    published: int


def measure_lag(redis_url: str, prefix: str, base: str, rate: int, seconds: float, seed: int) -> Lag:
    """Publish new jobs' events at ``rate`` events/s; time how soon each new job is listed.

    A publisher thread XADDs in 10 ms ticks and notes when each ``created`` event went out;
    one client meanwhile lists the newest jobs (``order_by=creation_order``, 100 per page)
    back to back and notes when each job first appears. One poller, not one per job, so the
    measurement does not load the API more than a single busy client would.
    """
    stream = Keys(prefix).events
    plan = make_plan(max(1000, int(rate * seconds) // 2), seed)
    published_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    done = threading.Event()
    published = 0

    def publish() -> None:
        nonlocal published
        r = redis.Redis.from_url(redis_url)
        events = (fields for chunk in iter_jobs(plan, chunk_size=1000) for job in chunk for fields in job_events(job))
        tick, per_tick = 0.01, max(1, round(rate * 0.01))
        t0 = time.perf_counter()
        n = 0
        try:
            while time.perf_counter() - t0 < seconds:
                pipe = r.pipeline(transaction=False)
                created = []
                for _ in range(per_tick):
                    fields = next(events)
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                    if fields["type"] == "created":
                        created.append(fields["job_id"])
                n += per_tick
                pipe.execute()
                now = time.perf_counter()
                published_at.update((job_id, now) for job_id in created)
                sleep = t0 + (n / per_tick) * tick - time.perf_counter()
                if sleep > 0:
                    time.sleep(sleep)
        except StopIteration:
            pass
        finally:
            published = n
            r.close()
            done.set()

    thread = threading.Thread(target=publish, daemon=True)
    t_start = time.perf_counter()
    thread.start()
    params = {"order_by": "creation_order", "order_by_direction": "DESC", "limit": 100}
    with httpx.Client(base_url=base, timeout=10) as http:
        settle = None
        while settle is None or time.perf_counter() < settle:
            response = http.get("/api/v2/jobs", params=params)
            now = time.perf_counter()
            for job in response.json()["data"]:
                seen_at.setdefault(job["id"], now)
            if done.is_set() and settle is None:
                settle = now + 5  # let the backlog drain
            time.sleep(0.005)
    thread.join()
    ours = [job_id for job_id in published_at if job_id in seen_at]
    lags = [(seen_at[j] - published_at[j]) * 1e3 for j in ours]
    lags += [float("inf")] * (len(published_at) - len(ours))  # never listed while watched
    return Lag(rate=published / (time.perf_counter() - t_start - 5), samples=lags, published=published)


def lag_line(lag: Lag) -> str:
    finite = [x for x in lag.samples if x != float("inf")]
    lost = len(lag.samples) - len(finite)
    if not finite:
        return "visibility lag: no samples"
    return (
        f"visibility lag (XADD of `created` -> job listed by GET /api/v2/jobs), {lag.published:,} events at "
        f"{lag.rate:,.0f} events/s, {len(finite)} jobs: p50 {percentile(finite, 50):.1f} ms, "
        f"p99 {percentile(finite, 99):.1f} ms, max {max(finite):.1f} ms"
        + (f"; {lost} not caught by the poller (listed between two polls)" if lost else "")
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
