"""Latency of project-scoped queries for users in many projects (not part of the default test run).

    .venv/bin/python -m tests.benchmarks.auth_scope [--jobs 100000] [--repeat 5]

Loads the benchmark data set into a private redis-server, then times the executor on a few
query shapes, unscoped (an admin) and scoped to users belonging to 1..1000 projects drawn
from the data set's (skewed) projects plus projects without jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import redis.asyncio as aioredis

from registry.auth.principal import Principal, Role, scope
from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import JobQuery
from registry.settings import load_settings
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.benchmarks.datagen import iter_jobs, job_events, make_plan
from tests.conftest import start_redis_server
from tests.query_params import parse_params

SHAPES: dict[str, list[tuple[str, str]]] = {
    "no filter": [],
    "status=DONE": [("status", "DONE")],
    "order_by=runs": [("order_by", "runs")],
    "DONE,ERROR by updated_at, offset 500": [
        ("status", "DONE"),
        ("status", "ERROR"),
        ("order_by", "updated_at"),
        ("offset", "500"),
    ],
    "errors=true & origin=AZURE": [("errors", "true"), ("origin", "AZURE")],
    "start_date range": [("start_date", "2026-09-01T00:00:00"), ("order_by", "start_timestamp")],
}


async def main(n_jobs: int, repeat: int) -> None:
    server = start_redis_server()
    try:
        client = aioredis.Redis.from_url(server.url)
        settings = load_settings({}, redis_url=server.url, prefix="bench")
        keys = Keys(settings.prefix)
        projection = Projection(client, keys, settings.set_to_bitmap_threshold)
        data = make_plan(n_jobs, seed=42)
        began = time.perf_counter()
        for chunk in iter_jobs(data, chunk_size=1000):
            await projection.apply([decode_event(f) for job in chunk for f in job_events(job)])
        print(f"loaded {n_jobs:,} jobs in {len(data.projects)} projects in {time.perf_counter() - began:.0f} s")
        executor = Executor(client, keys, settings)
        rng = random.Random(1)
        real = [p.id for p in data.projects]
        users: list[tuple[str, Principal]] = [("admin (unscoped)", Principal(user_id="root", role=Role.ADMIN))]
        for k in (1, 10, 50, 200, 1000):
            picked = rng.sample(real, min(k // 2 or 1, len(real)))
            ghosts = [str(uuid.uuid4()) for _ in range(k - len(picked))]
            users.append((f"user in {k} projects", Principal(user_id="u", projects=frozenset(picked + ghosts))))
        print(f"{'shape':40} " + " ".join(f"{name:>22}" for name, _ in users))
        for shape, params in SHAPES.items():
            query: JobQuery = parse_params(params)
            cells = []
            for _, principal in users:
                scoped = scope(query, principal)
                times = []
                for _ in range(repeat + 1):
                    t0 = time.perf_counter()
                    page = await executor.run(plan(scoped, keys))
                    times.append((time.perf_counter() - t0) * 1000)
                cells.append(f"{statistics.median(times[1:]):7.1f} ms ({page.total:>7})")
            print(f"{shape:40} " + " ".join(f"{c:>22}" for c in cells))
        await client.aclose()
    finally:
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ns = ap.parse_args()
    asyncio.run(main(ns.jobs, ns.repeat))
