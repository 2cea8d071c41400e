"""One-hex-digit id prefixes, in-process (planner and executor, no HTTP), on data kept by compare's ``--keep``.

Usage::

    python -m tests.benchmarks.prefixes --keep /tmp/bench-1m-layout5 [--jobs 1000000]

Times the workload's one-digit ``id__starts_with`` queries plus a grid (digits 3 and c, every
order, alone, with errors at offset 500, with DONE descending): median of 5 runs after a warm-up,
and the slowest Redis call (SLOWLOG). One JSON line per query, so two layouts' runs can be joined.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import load_settings
from registry.store.indexes import LAYOUT
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.harness import PREFIX
from tests.benchmarks.workload import ORDER_KEYS, Params, workload
from tests.conftest import start_redis_server
from tests.query_params import parse_params


def queries(jobs: int) -> list[tuple[str, Params]]:
    # The prefix scope draws no job ids, so made-up ids give the same prefix queries as compare's.
    fake = [f"{random.Random(i).getrandbits(128):032x}" for i in range(20)]
    ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in fake]
    out = [
        (label, params)
        for label, params in workload(make_plan(jobs, 42), ids, 300, 1)
        if any(k == "id__starts_with" and len(v) == 1 for k, v in params)
    ]
    for d in "3c":
        for o in ORDER_KEYS:
            by: Params = [("id__starts_with", d), ("order_by", o)]
            out.append((f"{d} by {o}", by))
            out.append((f"{d}+errors by {o} offset 500", [*by, ("errors", "true"), ("offset", "500")]))
            out.append((f"{d}+DONE by {o} DESC", [*by, ("status", "DONE"), ("order_by_direction", "DESC")]))
    return out


async def run(keep: str, jobs: int) -> None:
    server = start_redis_server(workdir=keep, dbfilename="bench.rdb", start_timeout_s=600)  # --save "": read only
    try:
        r = aioredis.Redis.from_url(server.url)
        await r.config_set("slowlog-log-slower-than", 0)
        await r.config_set("slowlog-max-len", 100_000)
        keys = Keys(PREFIX)
        ex = Executor(r, keys, load_settings({}, redis_url=server.url, prefix=PREFIX))
        for label, params in queries(jobs):
            p = plan(parse_params(params), keys)
            page = await ex.run(p)
            await r.slowlog_reset()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                await ex.run(p)
                times.append((time.perf_counter() - t0) * 1000)
            slowest = max((s["duration"] for s in await r.slowlog_get(100_000)), default=0) / 1000
            row = {"layout": LAYOUT, "label": label, "ms": round(statistics.median(times), 2)}
            print(json.dumps({**row, "max_call_ms": slowest, "total": page.total, "plan": page.strategy}), flush=True)
        await r.aclose()
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True, metavar="DIR", help="a directory compare --keep wrote")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.keep, args.jobs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
