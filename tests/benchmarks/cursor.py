"""A page token's page deep in the order vs the same page by offset vs the first page.

Usage::

    python -m tests.benchmarks.cursor --keep DIR [--depth 500000] [--repeat 30]

Runs the executor in process (no HTTP: the engine's cost only) against a kept benchmark copy
(``compare --keep DIR``). For each query shape, three pages of ``limit`` 100 are timed in
interleaved rounds: the first page (offset 0), the page at offset ``depth``, and the same page
reached by a page token (the seek after the row at ``depth - 1``). The token page's rows are
checked equal to the offset page's. Reported per page: wall time p50 / p90 in ms, and Redis's CPU
per page (INFO used_cpu_sys + used_cpu_user over the rounds), which the machine's other load
disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import Range, plan
from registry.query.seek import RANGED, Seek, list_page, next_seek, ranged
from registry.settings import load_settings
from tests.benchmarks.harness import PREFIX, start_redis
from tests.query_params import parse_params

SHAPES: list[tuple[str, list[tuple[str, str]]]] = [
    ("created_at DESC, no filter", [("order_by", "created_at")]),
    ("created_at DESC, status=DONE", [("order_by", "created_at"), ("status", "DONE")]),
    (
        "created_at ASC, origin=CLIENT",
        [("order_by", "created_at"), ("order_by_direction", "ASC"), ("origin", "CLIENT")],
    ),
    ("end_timestamp DESC, no filter", [("order_by", "end_timestamp")]),
    ("start_timestamp ASC, no filter", [("order_by", "start_timestamp"), ("order_by_direction", "ASC")]),
    ("runs ASC, no filter (ties)", [("order_by", "runs"), ("order_by_direction", "ASC")]),
    ("runs DESC, status=DONE (ties)", [("order_by", "runs"), ("status", "DONE")]),
    ("updated_at DESC, no filter (by position)", [("order_by", "updated_at")]),
    (
        "creation_order ASC, status=DONE (by position)",
        [("order_by", "creation_order"), ("order_by_direction", "ASC"), ("status", "DONE")],
    ),
    ("id ASC, status=DONE (by position)", [("order_by", "id"), ("order_by_direction", "ASC"), ("status", "DONE")]),
    ("updated_at DESC, status=DONE (by position)", [("order_by", "updated_at"), ("status", "DONE")]),
]
# ``--only`` picks shapes by a substring of their names.


async def _cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _shape(
    ex: Executor, r: aioredis.Redis, keys: Keys, base: list[tuple[str, str]], depth: int, repeat: int
) -> dict[str, Any]:
    limit = 100
    first_q = plan(parse_params([*base, ("limit", str(limit))]), keys)
    deep_q = plan(parse_params([*base, ("limit", str(limit)), ("offset", str(depth))]), keys)
    before_q = plan(parse_params([*base, ("limit", str(limit)), ("offset", str(depth - limit))]), keys)
    before, start, _ = await list_page(ex, before_q, None)
    seek: Seek = next_seek(first_q.order, None, start, before.jobs)
    if not ranged(seek, first_q.order) and first_q.order in RANGED and seek.value is not None:
        # An offset page whose rows all tie starts a chain by position; a chain from the first
        # page carries the ranged seek: its ties are the rows at that value up to the cursor.
        field = first_q.order.value
        lo, hi = (seek.value + 1, None) if first_q.desc else (None, seek.value - 1)
        bound = Range(field, keys.sort(field), keys.column(field), first_q.nonnull is not None, lo, hi)  # type: ignore[arg-type]
        earlier = await ex.total(msgspec.structs.replace(first_q, predicates=(*first_q.predicates, bound)))
        seek = msgspec.structs.replace(seek, ties=depth - earlier)
    deep_page, _, _ = await list_page(ex, deep_q, None)
    token_page, token_start, _ = await list_page(ex, first_q, seek)
    assert token_start == depth and [j.id for j in token_page.jobs] == [j.id for j in deep_page.jobs]
    kinds = {"first": (first_q, None), f"offset {depth}": (deep_q, None), f"token at {depth}": (first_q, seek)}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, float] = dict.fromkeys(kinds, 0.0)
    strategy: dict[str, str] = {}
    for _ in range(repeat):
        for name, (q, s) in kinds.items():
            c0 = await _cpu(r)
            t0 = time.perf_counter()
            page, _, _ = await list_page(ex, q, s)
            times[name].append((time.perf_counter() - t0) * 1000)
            cpu[name] += await _cpu(r) - c0
            strategy[name] = page.strategy
    return {
        "ranged": ranged(seek, first_q.order),
        "pages": {
            name: {
                "p50_ms": round(statistics.median(t), 2),
                "p90_ms": round(sorted(t)[int(0.9 * len(t))], 2),
                "redis_cpu_ms": round(cpu[name] / repeat * 1000, 2),
                "strategy": strategy[name][:160],
            }
            for name, t in times.items()
        },
    }


async def main(keep: str, depth: int, repeat: int, only: str = "") -> None:
    server = start_redis(keep)
    r = aioredis.Redis.from_url(server.url)
    try:
        keys = Keys(PREFIX)
        ex = Executor(r, keys, load_settings({}, redis_url=server.url, prefix=PREFIX))
        for name, base in [(n, b) for n, b in SHAPES if only in n]:
            result = await _shape(ex, r, keys, base, depth, repeat)
            print(f"{name} (seek {'by range bound' if result['ranged'] else 'by position'})")
            for page, figures in result["pages"].items():
                print(
                    f"  {page:>16}: p50 {figures['p50_ms']:7.2f} ms  p90 {figures['p90_ms']:7.2f} ms  "
                    f"redis cpu {figures['redis_cpu_ms']:6.2f} ms   {figures['strategy']}"
                )
    finally:
        await r.aclose()
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", required=True)
    ap.add_argument("--depth", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--only", default="", help="run only the shapes whose name contains this")
    ns = ap.parse_args()
    asyncio.run(main(ns.keep, ns.depth, ns.repeat, ns.only))
