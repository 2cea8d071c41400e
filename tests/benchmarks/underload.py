"""Under load: events/s published to the stream plus random queries/s, open loop, against idle.

A publisher process XADDs fresh jobs' events at a fixed rate for ``seconds`` while one
``jobreg worker`` folds them; meanwhile queries of the random workload are sent on schedule
(open loop: a slow answer never delays the next request, and latency counts from the
scheduled send time). The same query stream is first run for a while with nothing published
(idle). Reports p50/p99 both ways, errors, the consumer group's lag during the run and how
long it takes to get back to 0 once publishing stops.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Sequence
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from tests.benchmarks import harness
from tests.benchmarks.datagen import iter_jobs, job_events, make_plan
from tests.benchmarks.pg_only import percentile
from tests.benchmarks.workload import Query

#: Requests outstanding beyond this mean the server cannot keep up; more would only queue.
MAX_IN_FLIGHT = 128


def _events_stream() -> str:
    from registry.keys import Keys

    return Keys(harness.PREFIX).events


def publish(url: str, rate: int, seconds: float, seed: int, ready: Any, go: Any, count: Any) -> None:
    """XADD fresh jobs' events at ``rate`` events/s for ``seconds`` (10 ms ticks, pipelined).

    Sets ``ready`` once set up (imports, plan), then waits for ``go``, so that the measured
    period is all publishing; leaves the number of events published in ``count``.
    """
    r = redis.Redis.from_url(url)
    stream = _events_stream()
    plan = make_plan(max(1000, int(rate * seconds)), seed)
    events = (fields for chunk in iter_jobs(plan, chunk_size=1000) for job in chunk for fields in job_events(job))
    ready.set()
    go.wait()
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    t0 = time.perf_counter()
    ticks = 0
    while time.perf_counter() - t0 < seconds:
        pipe = r.pipeline(transaction=False)
        for _ in range(per_tick):
            pipe.xadd(stream, next(events))  # type: ignore[arg-type]
        pipe.execute()
        ticks += 1
        sleep = t0 + ticks * tick - time.perf_counter()
        if sleep > 0:
            time.sleep(sleep)
    count.value = ticks * per_tick
    r.close()


async def _backlog(r: aioredis.Redis, stream: str) -> int:
    """Entries not yet applied: the group's lag plus its pending entries (-1 before it exists)."""
    groups = await r.xinfo_groups(stream)
    if not groups:
        return -1
    group = groups[0]
    lag = group.get("lag")
    return (int(lag) if lag is not None else 0) + int(group["pending"])


async def _open_loop(
    base: str, headers: dict[str, str], queries: Sequence[Query], qps: int, seconds: float
) -> tuple[list[float], int]:
    """Send ``qps`` queries/s for ``seconds`` on schedule: (latencies ms, errors)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as client:

        async def one(params: Any, scheduled: float) -> None:
            nonlocal errors
            try:
                response = await client.get("/api/v2/jobs", params=params)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1e3)

        tasks = []
        t0 = time.perf_counter()
        for i in range(int(qps * seconds)):
            scheduled = t0 + i / qps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if sum(1 for t in tasks if not t.done()) >= MAX_IN_FLIGHT:
                errors += 1  # saturated: counted as an error rather than queued without end
                continue
            tasks.append(asyncio.create_task(one(queries[i % len(queries)][1], scheduled)))
        await asyncio.gather(*tasks)
    return latencies, errors


async def _loaded(
    url: str, base: str, headers: dict[str, str], queries: Sequence[Query], eps: int, qps: int, seconds: float
) -> dict[str, Any]:
    r = aioredis.Redis.from_url(url)
    stream = _events_stream()
    ctx = multiprocessing.get_context("spawn")
    ready, go, count = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    publisher = ctx.Process(target=publish, args=(url, eps, seconds, 7, ready, go, count))
    max_backlog = 0
    publisher.start()
    await asyncio.to_thread(ready.wait)
    go.set()
    t_start = time.perf_counter()

    async def watch() -> None:
        nonlocal max_backlog
        while publisher.is_alive():
            max_backlog = max(max_backlog, await _backlog(r, stream))
            await asyncio.sleep(0.25)

    async def drain() -> tuple[float, float, int]:
        # From the last XADD (the publisher exits right after it) until the backlog is 0.
        await asyncio.to_thread(publisher.join)
        ended = time.perf_counter()
        while (backlog := await _backlog(r, stream)) != 0 and time.perf_counter() - ended < 120:
            await asyncio.sleep(0.01)
        return ended, time.perf_counter() - ended, backlog

    watcher = asyncio.create_task(watch())
    drainer = asyncio.create_task(drain())
    latencies, errors = await _open_loop(base, headers, queries, qps, seconds)
    t_published, drained_s, backlog = await drainer
    await watcher
    published = int(count.value)
    await r.aclose()
    return {
        "latencies": latencies,
        "errors": errors,
        "rate": published / (t_published - t_start),
        "published": published,
        "max_backlog": max_backlog,
        "drain_s": drained_s,
        "final_backlog": backlog,
    }


def run(
    url: str,
    r: redis.Redis,
    base: str,
    headers: dict[str, str],
    queries: Sequence[Query],
    eps: int,
    qps: int,
    seconds: float,
) -> None:
    """Measure idle, then under load, and print the comparison."""
    worker = harness.jobreg(["worker"], url)
    try:
        idle_s = max(10.0, seconds / 3)
        time.sleep(2)  # the worker creates its group and settles
        idle, idle_errors = asyncio.run(_open_loop(base, headers, queries, qps, idle_s))
        loaded = asyncio.run(_loaded(url, base, headers, queries, eps, qps, seconds))
    finally:
        harness.stop(worker)
    lat = loaded["latencies"]
    idle_p99, loaded_p99 = percentile(idle, 99), percentile(lat, 99)
    ok = loaded_p99 <= 2 * idle_p99 and loaded["errors"] == 0 and loaded["drain_s"] <= 1
    print(
        f"\nunder load ({'ok' if ok else 'MISS'}): {loaded['published']:,} events at {loaded['rate']:,.0f} events/s "
        f"+ {qps} queries/s of the random workload, open loop, {seconds:.0f} s (idle: same queries, {idle_s:.0f} s)\n"
        f"  query p50 {percentile(lat, 50):.2f} ms, p99 {loaded_p99:.2f} ms, max {max(lat):.1f} ms; "
        f"idle p50 {percentile(idle, 50):.2f} ms, p99 {idle_p99:.2f} ms -> p99 {loaded_p99 / idle_p99:.2f}x idle "
        f"(target <= 2x)\n"
        f"  errors {loaded['errors']} under load, {idle_errors} idle (target 0); backlog (lag + pending) up to "
        f"{loaded['max_backlog']:,} entries during the run, back to {loaded['final_backlog']} "
        f"{loaded['drain_s'] * 1e3:.0f} ms after the last XADD (target <= 1 s)"
    )
