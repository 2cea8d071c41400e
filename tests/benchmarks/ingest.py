"""Ingest: one ``jobreg worker`` draining pre-published events; events/s, Redis calls per job, apply call times.

Run from the repository root::

    python -m tests.benchmarks.ingest --events 200000

Starts a private redis-server, XADDs the events of fresh generated jobs (whole jobs, up to
``--events``; optionally ``--preload`` jobs applied first through the Projection, so indexes
are not empty), then starts one worker and waits until the group's lag and pending are 0.
Reports events/s from the first delivery, the Redis commands run per job (``INFO
commandstats``, which counts the commands scripts run), and the distribution of apply call
(EVALSHA) durations from ``LATENCY HISTOGRAM`` plus the count and slowest of calls over 1 ms
(SLOWLOG). Targets (issue 11): >= 30,000 events/s, no apply call over 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

import redis
from tqdm import tqdm

from tests.benchmarks import harness
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.run import group_backlog, publish_all
from tests.conftest import start_redis_server

SLOW_US = 1000


def histogram(r: redis.Redis, command: str) -> dict[int, int]:
    """LATENCY HISTOGRAM of ``command``: {upper bound in us: calls in that power-of-two bucket}."""
    reply = r.execute_command("LATENCY", "HISTOGRAM", command)
    if not reply:
        return {}
    fields = dict(zip(reply[1][::2], reply[1][1::2], strict=True))
    cumulative = dict(zip(fields[b"histogram_usec"][::2], fields[b"histogram_usec"][1::2], strict=True))
    out, previous = {}, 0
    for bound in sorted(cumulative):
        out[int(bound)] = int(cumulative[bound]) - previous
        previous = int(cumulative[bound])
    return out


def commands(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """(calls, microseconds) per command since the last CONFIG RESETSTAT (scripts' own time includes theirs)."""
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()}


def preload(url: str, n_jobs: int, seed: int) -> None:
    """Apply ``n_jobs`` other jobs through the Projection first (an index that is not empty)."""
    from tests.benchmarks.harness import _load_jobreg

    asyncio.run(_load_jobreg(url, make_plan(n_jobs, seed)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to publish and drain")
    parser.add_argument("--preload", type=int, default=0, help="jobs applied before (0: start empty)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    server = start_redis_server()
    r = redis.Redis.from_url(server.url)
    try:
        if args.preload:
            preload(server.url, args.preload, args.seed + 1)
        from registry.keys import Keys

        stream = Keys(harness.PREFIX).events
        n_events, n_jobs = publish_all(r, stream, make_plan(max(1000, args.events // 3), args.seed), args.events)
        r.config_set("slowlog-log-slower-than", SLOW_US)
        r.config_set("slowlog-max-len", 100_000)
        r.slowlog_reset()
        r.config_resetstat()
        worker = harness.jobreg(["worker"], server.url)
        try:
            t_first: float | None = None
            with tqdm(total=n_events, unit="ev", unit_scale=True, desc="worker drain", mininterval=5) as bar:
                while True:
                    got = group_backlog(r, stream)
                    if got is not None:
                        lag, pending = got
                        if t_first is None and lag < n_events:
                            t_first = time.perf_counter()
                        bar.n = n_events - max(lag, 0) - pending
                        bar.refresh()
                        if lag == 0 and pending == 0:
                            break
                    if worker.poll() is not None:
                        raise RuntimeError(f"worker exited with {worker.returncode}")
                    time.sleep(0.02)
            t_end = time.perf_counter()
        finally:
            harness.stop(worker)
        report(r, n_events, n_jobs, t_end - (t_first or t_end), stream)
    finally:
        r.close()
        server.stop()
    return 0


def report(r: redis.Redis, n_events: int, n_jobs: int, seconds: float, stream: str) -> None:
    calls = commands(r)
    hist = histogram(r, "evalsha")
    slow = [e for e in r.slowlog_get(100_000) if e["command"].split(b" ", 1)[0].upper() == b"EVALSHA"]
    keys = __import__("registry.keys", fromlist=["Keys"]).Keys(harness.PREFIX)
    listed, dead = r.bitcount(keys.all), r.xlen(keys.dead)
    n_apply = sum(hist.values())
    own = {"xreadgroup", "xack", "hdel", "hincrby", "evalsha", "hmget", "xadd", "xinfo|groups", "incrby"}
    inner = sum(n for name, (n, _) in calls.items() if name not in own and not name.startswith(("config", "info")))
    print(
        f"\ningest, one worker: {n_events:,} events of {n_jobs:,} jobs in {seconds:.2f} s from first delivery "
        f"= {n_events / seconds:,.0f} events/s (target >= 30,000); {listed:,} listed, {dead} dead letters"
    )
    print(
        f"  {n_apply:,} apply calls ({n_jobs / max(1, n_apply):.1f} jobs each); Redis commands per job: "
        f"{sum(n for n, _ in calls.values()) / n_jobs:.1f} in all, {inner / n_jobs:.1f} run by scripts or housekeeping"
    )
    top = sorted(calls.items(), key=lambda kv: -kv[1][1])[:10]
    print(
        "  commands by time (per job): "
        + ", ".join(f"{name} {n / n_jobs:.2f}x {us / n_jobs:.1f} us" for name, (n, us) in top)
    )
    shown = ", ".join(f"<={bound}us {n}" for bound, n in hist.items() if n)
    print(f"  apply call durations (LATENCY HISTOGRAM evalsha): {shown}")
    worst = max((e["duration"] for e in slow), default=0)
    ok = "ok  " if not slow else "MISS"
    print(f"  [{ok}] apply calls over {SLOW_US} us: {len(slow)} (slowest {worst} us) (target 0)")
    if listed != n_jobs or dead:
        print(f"!!! INGEST MISMATCH: expected {n_jobs} listed jobs and no dead letters")


if __name__ == "__main__":
    raise SystemExit(main())
