"""The physical floors under every query: what no engine design on this machine can go below.

Usage::

    python -m tests.benchmarks.floors [--sizes 1000000 10000000] [--repeat 2000]

Starts a private redis-server and measures, each as p50 / p99 in microseconds:

- a Redis round trip from redis-py's asyncio client (PING), and an EVALSHA of a script that
  does nothing (the one-call path's fixed price);
- at each size N (handles 0..N-1, a random half set): one ``BITOP AND`` of two N-bit bitmaps,
  one ``BITCOUNT`` of an N-bit bitmap, and a ``BITOP AND`` + ``BITCOUNT`` inside one script
  (how a status & origin total is counted);
- a ``ZRANGE`` of 100 members by rank from a sorted set of N members at rank N/2.

Issue 11 asks its closing note to state these next to the targets: a query over HTTP can't be
faster than the HTTP floor (measured by ``compare``: an id lookup that matches nothing) plus one
round trip plus what Redis itself must do for it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis

from tests.conftest import start_redis_server

_AND_COUNT = "redis.call('BITOP', 'AND', KEYS[3], KEYS[1], KEYS[2]) return redis.call('BITCOUNT', KEYS[3])"


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def _time(repeat: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    for _ in range(min(50, repeat)):
        await call()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times), _p(times, 0.99)


def _fill(r: redis.Redis, n: int) -> None:
    """Two random half-full N-bit bitmaps and an N-member sorted set (written as whole strings: fast)."""
    rng = random.Random(n)
    for key in ("a", "b"):
        r.set(key, rng.randbytes(n // 8))
    r.delete("z")
    chunk = 100_000
    for lo in range(0, n, chunk):
        r.zadd("z", {f"m{i:09d}": rng.random() for i in range(lo, min(n, lo + chunk))})


async def _measure(url: str, sizes: list[int], repeat: int) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    client = aioredis.Redis.from_url(url)
    rows.append(("round trip (PING, redis-py asyncio)", *await _time(repeat, client.ping)))
    noop = await client.script_load("return 1")
    rows.append(("EVALSHA of an empty script", *await _time(repeat, lambda: client.evalsha(noop, 0))))
    and_count = await client.script_load(_AND_COUNT)
    sync = redis.Redis.from_url(url)
    for n in sizes:
        _fill(sync, n)
        label = f"{n:,} jobs"
        rows.append(
            (f"BITOP AND of two bitmaps, {label}", *await _time(repeat, lambda: client.bitop("AND", "c", "a", "b")))
        )
        rows.append((f"BITCOUNT of one bitmap, {label}", *await _time(repeat, lambda: client.bitcount("a"))))
        rows.append(
            (
                f"AND + BITCOUNT in one script, {label}",
                *await _time(repeat, lambda: client.evalsha(and_count, 3, "a", "b", "c")),
            )
        )
        mid = n // 2
        rows.append(
            (
                f"ZRANGE 100 by rank at rank N/2, {label}",
                *await _time(repeat, lambda m=mid: client.zrange("z", m, m + 99)),  # type: ignore[misc]
            )
        )
    sync.close()
    await client.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    server = start_redis_server()
    try:
        rows = asyncio.run(_measure(server.url, args.sizes, args.repeat))
    finally:
        server.stop()
    print(f"floors on this machine ({os.cpu_count()} cores), µs, {args.repeat} runs each")
    print("| measure | p50 | p99 |")
    print("|---|---:|---:|")
    for label, p50, p99 in rows:
        print(f"| {label} | {p50:,.0f} | {p99:,.0f} |")


if __name__ == "__main__":
    main()
