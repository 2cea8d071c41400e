"""Ingest in-process: one Consumer draining pre-published events, with CPU per event and a profile.

Run from the repository root::

    python -m tests.benchmarks.ingest_profile --events 60000 [--budget 600] [--profile 25] [--keep DIR]

The same events as ``tests.benchmarks.ingest`` (same generator and seed), drained by a
``Consumer`` in this process instead of ``jobreg worker`` subprocesses, so Python's share can be
profiled (cProfile, top ``--profile`` functions by own time) and the apply calls' size can be
fixed (``--budget``, in cost units; 0 keeps the time budget), which takes the machine's load
out of the call sizes when comparing two versions of the code. ``--keep`` ingests on top of a
copy of a benchmark's kept data (e.g. 1M jobs), where the indexes are as large as in production.
Reports CPU per event of this process and of Redis (``INFO cpu``), events/s, apply calls and their
sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import time
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.settings import load_settings
from tests.benchmarks import harness
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.ingest import commands, redis_cpu
from tests.benchmarks.run import publish_all
from tests.conftest import start_redis_server
from workers.consumer import Consumer


async def drain(url: str, budget: int, profile: cProfile.Profile | None) -> tuple[float, float, float, int]:
    """Drain the stream with one Consumer; (wall s, process CPU s, of which system, apply calls)."""
    settings = load_settings({"JOBREG_REDIS_URL": url, "JOBREG_PREFIX": harness.PREFIX})
    client = aioredis.Redis.from_url(url)
    consumer = Consumer(client, settings)
    if budget:
        consumer.projection.fixed_budget = budget
    await consumer.step()  # group, script load, first batch: outside the measured drain
    calls = 0
    wall, cpu, sys_s = time.perf_counter(), time.process_time(), os.times().system
    if profile:
        profile.enable()
    while await consumer.step():
        pass
    if profile:
        profile.disable()
    wall, cpu, sys_s = time.perf_counter() - wall, time.process_time() - cpu, os.times().system - sys_s
    calls = len(consumer.projection.durations)
    await client.aclose()
    return wall, cpu, sys_s, calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--budget", type=int, default=600, help="fixed apply call cost budget (0: time budget)")
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions by own time")
    parser.add_argument(
        "--keep", metavar="DIR", help="a copy of a benchmark's kept data (compare --keep): ingest on top of it"
    )
    args = parser.parse_args(argv)
    server = harness.start_redis(args.keep) if args.keep else start_redis_server()
    r = redis.Redis.from_url(server.url)
    try:
        stream = Keys(harness.PREFIX).events
        n_events, n_jobs = publish_all(r, stream, make_plan(max(1000, args.events // 3), args.seed), args.events)
        r.config_resetstat()
        redis_before = redis_cpu(r)
        profile = cProfile.Profile() if args.profile else None
        wall, cpu, sys_s, calls = asyncio.run(drain(server.url, args.budget, profile))
        redis_used = redis_cpu(r) - redis_before
        evalsha = r.info("commandstats").get("cmdstat_evalsha", {})
        print(
            f"\nin-process drain of {n_events:,} events ({n_jobs:,} jobs), budget {args.budget or 'time'}: "
            f"{n_events / wall:,.0f} events/s; CPU per event: worker {cpu / n_events * 1e6:.1f} us "
            f"({sys_s / n_events * 1e6:.1f} us in the kernel), "
            f"Redis {redis_used / n_events * 1e6:.1f} us; {calls:,} apply calls "
            f"({n_jobs / max(1, calls):.1f} jobs each, {evalsha.get('usec_per_call', 0):.0f} us each in Redis)"
        )
        stats = commands(r)
        top = sorted(stats.items(), key=lambda kv: -kv[1][1])[:12]
        print(
            "  Redis commands by time (per job): "
            + ", ".join(f"{name} {n / n_jobs:.2f}x {us / n_jobs:.1f} us" for name, (n, us) in top)
        )
        if profile is not None:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile)
            print(out.getvalue())
    finally:
        r.close()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
