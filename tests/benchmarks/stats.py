"""GET /api/v2/jobs/stats at scale: time it beside the list query for the 16 benchmark shapes.

    .venv/bin/python -m tests.benchmarks.stats --jobs 200000

Loads N realistic jobs (tests/benchmarks/datagen.py) through the real projection into a
private redis-server, starts one `jobreg api`, and times each shape R times over HTTP:
the list (GET /api/v2/jobs) and the counts (GET /api/v2/jobs/stats, same filters),
checking that the counts' total equals the list's total. Prints p50/p99 of both and the
slowest Redis command seen while counting (SLOWLOG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import httpx
import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.benchmarks.datagen import bench_info, iter_jobs, job_events, make_plan
from tests.benchmarks.shapes import shapes
from tests.conftest import free_port, start_redis_server

PREFIX = "bench-stats"


async def load(url: str, n_jobs: int) -> float:
    client = aioredis.Redis.from_url(url)
    projection = Projection(client, Keys(PREFIX))
    t0 = time.perf_counter()
    plan = make_plan(n_jobs)
    for chunk in iter_jobs(plan, chunk_size=1000):
        await projection.apply([decode_event(f) for job in chunk for f in job_events(job)])
    await client.aclose()
    return time.perf_counter() - t0


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    server = start_redis_server()
    port = free_port()
    api: subprocess.Popen[bytes] | None = None
    try:
        print(f"loading {args.jobs:,} jobs ...", flush=True)
        print(f"loaded in {asyncio.run(load(server.url, args.jobs)):.0f} s", flush=True)
        env = {**os.environ, "JOBREG_REDIS_URL": server.url, "JOBREG_PREFIX": PREFIX, "JOBREG_LOG_LEVEL": "WARNING"}
        api = subprocess.Popen(
            [sys.executable, "-m", "registry.ops.cli", "api", "--port", str(port), "--no-auth"], env=env
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        r = redis.Redis(port=server.port)
        info = bench_info(make_plan(args.jobs))
        print(f"{'shape':<38} {'total':>9} {'list p50':>9} {'p99':>7} {'stats p50':>10} {'p99':>7}  ms")
        with httpx.Client(base_url=base, timeout=30) as http:
            worst_us = 0
            for name, params in shapes(info):
                times: dict[str, list[float]] = {"list": [], "stats": []}
                total = None
                for _ in range(args.repeat):
                    for kind, path in (("list", "/api/v2/jobs"), ("stats", "/api/v2/jobs/stats")):
                        t0 = time.perf_counter()
                        resp = http.get(path, params=params)
                        times[kind].append((time.perf_counter() - t0) * 1000)
                        assert resp.status_code == 200, resp.text
                        body = resp.json()
                        if kind == "list":
                            total = body["pagination"]["total"]
                        else:
                            assert body["data"]["total"] == total, (name, body["data"]["total"], total)
                r.slowlog_reset()
                http.get("/api/v2/jobs/stats", params=params)
                worst_us = max([worst_us, *(int(e["duration"]) for e in r.slowlog_get(10))])
                print(
                    f"{name:<38} {total:>9,} {p(times['list'], 50):>9.1f} {p(times['list'], 99):>7.1f}"
                    f" {p(times['stats'], 50):>10.1f} {p(times['stats'], 99):>7.1f}",
                    flush=True,
                )
        print(f"slowest Redis command while counting: {worst_us / 1000:.1f} ms (SLOWLOG threshold 5 ms)")
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=10)
        server.stop()


if __name__ == "__main__":
    main()
