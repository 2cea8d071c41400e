"""Pages across partitions (issue 14): offset pages by rank search vs by top-(offset + limit) merge, and a
page token at depth, on P partitions of one standalone redis-server.

Usage::

    python -m tests.benchmarks.scatter --keep DIR [--jobs 1000000] [--partitions 16] [--repeat 15]
        [--one DIR1]

Loads the benchmark's generated jobs (datagen, seed 42) into P partitions with the bulk loader
(each job into Partitions.of its id, as the workers route it), kept in DIR for reruns. Runs the scatter
executor in process (no HTTP). For each shape and page (limit 100), timed in interleaved rounds: the
wall time p50 / p90 and Redis's CPU per page (INFO used_cpu_*, which the machine's other load disturbs
less). Every rank-search page is checked equal to the top-merge page where both are measured, and the
token page to the offset page. ``--one DIR1``: a copy of the same jobs in one partition (``compare
--keep``'s data, prefix ``bench``), timed beside through the same executor.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from registry.partition import Partitions
from registry.query import scatter
from registry.query.scatter import Scatter
from registry.query.seek import Seek, next_seek
from registry.query.spec import JobQuery
from registry.route import OneNode
from registry.settings import load_settings
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.harness import PREFIX, start_redis
from tests.query_params import parse_params

SHAPES: list[tuple[str, list[tuple[str, str]]]] = [
    ("created_at DESC, no filter", [("order_by", "created_at")]),
    ("created_at DESC, status=DONE", [("order_by", "created_at"), ("status", "DONE")]),
    ("end_timestamp DESC, no filter", [("order_by", "end_timestamp")]),
    ("runs ASC, no filter (ties)", [("order_by", "runs"), ("order_by_direction", "ASC")]),
    ("updated_at DESC, no filter", [("order_by", "updated_at")]),
]


def offsets(n_jobs: int) -> tuple[int, int, int]:
    """The pages timed: the first, offset 10,000 and half-way (500,000 at 1M jobs)."""
    return 0, min(10_000, n_jobs // 100), n_jobs // 2


TOP_MERGE_UP_TO = 10_000  # deeper, P x (offset + limit) rows a page: not measured (see docs/scaling.md)


def load(url: str, n_jobs: int, partitions: int) -> None:
    """Bulk-load the jobs into ``partitions`` partitions, unless DIR already holds them."""
    from tests.benchmarks.bulk import bulk_load_partitioned

    r = redis.Redis.from_url(url)
    marker, wanted = f"{PREFIX}:partitioned:loaded", f"{n_jobs}:42:{partitions}"
    if (r.get(marker) or b"").decode() == wanted:
        print(f"reusing the kept data ({n_jobs:,} jobs in {partitions} partitions)")
        return
    r.flushall()
    settings = load_settings({})
    n, wall = bulk_load_partitioned(
        url, PREFIX, make_plan(n_jobs, 42), settings.set_to_bitmap_threshold, settings.change_log_retention, partitions
    )
    print(f"bulk-loaded {n:,} jobs into {partitions} partitions in {wall:.0f} s")
    r.set(marker, wanted)
    r.save()


async def _cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


Page = Callable[[], Awaitable[Any]]


async def _time(pages: dict[str, tuple[aioredis.Redis, Page]], repeat: int) -> dict[str, dict[str, Any]]:
    times: dict[str, list[float]] = {k: [] for k in pages}
    cpu = dict.fromkeys(pages, 0.0)
    how: dict[str, str] = {}
    for _ in range(repeat):
        for name, (r, page) in pages.items():
            c0 = await _cpu(r)
            t0 = time.perf_counter()
            listing, _, _ = await page()
            times[name].append((time.perf_counter() - t0) * 1000)
            cpu[name] += await _cpu(r) - c0
            how[name] = listing.strategy
    return {
        name: {
            "p50": statistics.median(t),
            "p90": sorted(t)[int(0.9 * len(t))],
            "cpu": cpu[name] / repeat * 1000,
            "how": how[name][:110],
        }
        for name, t in times.items()
    }


def _page(ex: Scatter, query: JobQuery, seek: Seek | None = None, top_merge: int | None = None) -> Page:
    async def run() -> Any:
        old = scatter.TOP_MERGE_MAX
        if top_merge is not None:
            scatter.TOP_MERGE_MAX = top_merge
        try:
            return await ex.list_page(query, seek)
        finally:
            scatter.TOP_MERGE_MAX = old

    return run


async def _shape(
    many: Scatter,
    r: aioredis.Redis,
    one: tuple[Scatter, aioredis.Redis] | None,
    base: list[tuple[str, str]],
    depths: tuple[int, int, int],
    repeat: int,
) -> dict[str, dict[str, Any]]:
    pages: dict[str, tuple[aioredis.Redis, Page]] = {}
    for offset in depths:
        query = parse_params([*base, ("offset", str(offset))])
        ranked = _page(many, query, top_merge=0)
        pages[f"offset {offset:,}: rank search"] = (r, ranked)
        if offset <= TOP_MERGE_UP_TO:
            merged = _page(many, query, top_merge=10**9)
            a, b = (await ranked())[0], (await merged())[0]
            assert [j.id for j in a.jobs] == [j.id for j in b.jobs] and a.total == b.total, offset
            pages[f"offset {offset:,}: top merge"] = (r, merged)
        if one is not None:
            pages[f"offset {offset:,}: one partition"] = (one[1], _page(one[0], query))
    deep = depths[-1]
    first = parse_params(base)
    before, start, _ = await many.list_page(parse_params([*base, ("offset", str(deep - 100))]), None)
    seek = next_seek(first.order_by, None, start, before.jobs)
    token = _page(many, first, seek)
    offset_page = (await _page(many, parse_params([*base, ("offset", str(deep))]))())[0]
    assert [j.id for j in (await token())[0].jobs] == [j.id for j in offset_page.jobs]
    pages[f"token at {deep:,}"] = (r, token)
    return await _time(pages, repeat)


async def main(keep: str, n_jobs: int, partitions: int, repeat: int, one_dir: str | None, only: str) -> None:
    server = start_redis(keep)
    one_server = start_redis(one_dir) if one_dir else None
    clients: list[aioredis.Redis] = []
    try:
        await asyncio.to_thread(load, server.url, n_jobs, partitions)
        settings = load_settings({}, redis_url=server.url, prefix=PREFIX)
        r = aioredis.Redis.from_url(server.url)
        clients.append(r)
        many = Scatter(OneNode(r, Partitions(PREFIX, partitions)), settings)
        one = None
        if one_server is not None:
            r1 = aioredis.Redis.from_url(one_server.url)
            clients.append(r1)
            one = (Scatter(OneNode(r1, Partitions(PREFIX, 1)), settings), r1)
        for name, base in [(n, b) for n, b in SHAPES if only in n]:
            print(f"{name} (P = {partitions}, {n_jobs:,} jobs)")
            for page, f in (await _shape(many, r, one, base, offsets(n_jobs), repeat)).items():
                print(
                    f"  {page:>32}: p50 {f['p50']:8.2f} ms  p90 {f['p90']:8.2f} ms  "
                    f"redis cpu {f['cpu']:7.2f} ms   {f['how']}"
                )
    finally:
        for c in clients:
            await c.aclose()
        server.stop()
        if one_server is not None:
            one_server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", required=True)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--one", default=None, help="a kept one-partition copy of the same jobs (compare --keep)")
    ap.add_argument("--only", default="", help="run only the shapes whose name contains this")
    ns = ap.parse_args()
    asyncio.run(main(ns.keep, ns.jobs, ns.partitions, ns.repeat, ns.one, ns.only))
