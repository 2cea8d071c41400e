"""Ingest: ``jobreg worker`` processes draining pre-published events; events/s, CPU per event, apply call times.

Run from the repository root::

    python -m tests.benchmarks.ingest --events 200000 [--workers 2] [--partitions 4 [--direct]]

Starts a private redis-server, XADDs the events of fresh generated jobs (whole jobs, up to
``--events``; optionally ``--preload`` jobs applied first through the Projection, so indexes
are not empty), then starts ``--workers`` workers and waits until the group's lag and pending
are 0. Reports events/s from the first delivery; CPU per event of the workers (their
``/proc`` times over the drain) and of Redis (``INFO cpu``), which the machine's load skews far
less than wall time; the Redis commands run per job (``INFO commandstats``, which counts the
commands scripts run); and every apply call's (EVALSHA's) duration: SLOWLOG logs every command
during the drain (threshold 0), so p50/p99/max are exact, beside the ``LATENCY HISTOGRAM``
buckets. Targets (issue 11): one worker >= 30,000 events/s, no apply call over 1 ms.

``--partitions P`` (issue 14) stores P before the workers start: the events go through the workers'
router from `<prefix>:events` to the partition streams, or with ``--direct`` are moved to the partition
streams before the drain (the publisher's high-rate path), and the drain ends when every stream is empty.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from typing import NamedTuple

import redis
from tqdm import tqdm

from registry.keys import Keys
from registry.partition import Partitions
from registry.wire.publisher import stream_for
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


def cpu_seconds(procs: Sequence[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    ticks = 0
    for proc in procs:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_cpu(r: redis.Redis) -> float:
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def quantile(values: Sequence[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def preload(url: str, n_jobs: int, seed: int) -> None:
    """Apply ``n_jobs`` other jobs through the Projection first (an index that is not empty)."""
    from tests.benchmarks.harness import _load_jobreg

    asyncio.run(_load_jobreg(url, make_plan(n_jobs, seed)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to publish and drain")
    parser.add_argument("--preload", type=int, default=0, help="jobs applied before (0: start empty)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="worker processes draining together")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the registry (stored before)")
    parser.add_argument("--direct", action="store_true", help="publish to the partition streams, not the router")
    args = parser.parse_args(argv)
    server = start_redis_server()
    r = redis.Redis.from_url(server.url)
    try:
        if args.preload:
            preload(server.url, args.preload, args.seed + 1)
        stream = Keys(harness.PREFIX).events
        n_events, n_jobs = publish_all(r, stream, make_plan(max(1000, args.events // 3), args.seed), args.events)
        parts = Partitions(harness.PREFIX, args.partitions)
        r.set(Keys(harness.PREFIX).partitions, args.partitions)
        if args.direct and args.partitions > 1:
            move_to_partitions(r, stream, parts)
        streams = list(dict.fromkeys([stream, *(k.events for k in parts.keys)]))
        # Every command of the drain, so each apply call's duration is known (not only the slow ones).
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 4 * n_events + 10_000)
        r.slowlog_reset()
        r.config_resetstat()
        workers = [harness.jobreg(["worker"], server.url) for _ in range(args.workers)]
        try:
            t_first: float | None = None
            cpu_first = redis_first = 0.0
            with tqdm(total=n_events, unit="ev", unit_scale=True, desc="worker drain", mininterval=5) as bar:
                while True:
                    got = backlog(r, streams)
                    if got is not None:
                        lag, pending = got
                        if t_first is None and lag < n_events:
                            t_first = time.perf_counter()
                            cpu_first, redis_first = cpu_seconds(workers), redis_cpu(r)
                        bar.n = n_events - max(lag, 0) - pending
                        bar.refresh()
                        if lag == 0 and pending == 0:
                            break
                    if any(w.poll() is not None for w in workers):
                        raise RuntimeError(f"a worker exited with {[w.returncode for w in workers]}")
                    time.sleep(0.02)
            t_end = time.perf_counter()
            cpu = Cpu(cpu_seconds(workers) - cpu_first, redis_cpu(r) - redis_first)
        finally:
            for worker in workers:
                harness.stop(worker)
        report(r, n_events, n_jobs, t_end - (t_first or t_end), parts, len(workers), cpu)
    finally:
        r.close()
        server.stop()
    return 0


def move_to_partitions(r: redis.Redis, stream: str, parts: Partitions) -> None:
    """Move every entry of ``stream`` to its job's partition stream, in order (set-up, not timed)."""
    keys = Keys(parts.prefix)
    start = "-"
    while rows := r.xrange(stream, min=start, max="+", count=5000):
        pipe = r.pipeline(transaction=False)
        for _, fields in rows:
            pipe.xadd(stream_for(keys, parts, fields), fields)  # type: ignore[arg-type]
        pipe.execute()
        start = "(" + rows[-1][0].decode()  # type: ignore[index]
    r.delete(stream)


def backlog(r: redis.Redis, streams: Sequence[str]) -> tuple[int, int] | None:
    """(lag, pending) summed over the streams that hold entries; None until the workers' group exists on each."""
    lag = pending = 0
    for stream in streams:
        if not r.exists(stream):
            continue
        got = group_backlog(r, stream)
        if got is None:
            return None
        lag, pending = lag + max(got[0], 0), pending + got[1]
    return lag, pending


class Cpu(NamedTuple):
    workers: float  # seconds, all workers together, over the drain
    redis: float


def report(
    r: redis.Redis, n_events: int, n_jobs: int, seconds: float, parts: Partitions, n_workers: int, cpu: Cpu
) -> None:
    calls = commands(r)
    hist = histogram(r, "evalsha")
    log = r.slowlog_get(10**8)
    durations = [int(e["duration"]) for e in log if e["command"].split(b" ", 1)[0].upper() == b"EVALSHA"]
    slow = [d for d in durations if d > SLOW_US]
    listed, dead = sum(int(r.bitcount(k.all)) for k in parts.keys), r.xlen(Keys(parts.prefix).dead)
    n_apply = sum(hist.values())
    own = {"xreadgroup", "xack", "hdel", "hincrby", "evalsha", "hmget", "xadd", "xinfo|groups", "incrby"}
    inner = sum(n for name, (n, _) in calls.items() if name not in own and not name.startswith(("config", "info")))
    print(
        f"\ningest, {n_workers} worker{'s' if n_workers > 1 else ''}, P = {parts.count}: "
        f"{n_events:,} events of {n_jobs:,} jobs in "
        f"{seconds:.2f} s from first delivery = {n_events / seconds:,.0f} events/s (target >= 30,000 for one); "
        f"{listed:,} listed, {dead} dead letters"
    )
    print(
        f"  CPU per event: workers {cpu.workers / n_events * 1e6:.1f} us, Redis {cpu.redis / n_events * 1e6:.1f} us "
        f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
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
    print(
        f"  apply call durations (SLOWLOG, {len(durations):,} calls): p50 {quantile(durations, 0.5)} us, "
        f"p99 {quantile(durations, 0.99)} us, max {max(durations, default=0)} us"
    )
    ok = "ok  " if not slow else "MISS"
    print(f"  [{ok}] apply calls over {SLOW_US} us: {len(slow)} (slowest {max(slow, default=0)} us) (target 0)")
    if listed != n_jobs or dead:
        print(f"!!! INGEST MISMATCH: expected {n_jobs} listed jobs and no dead letters")


if __name__ == "__main__":
    raise SystemExit(main())
