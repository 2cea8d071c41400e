"""A/B of the one-call query path (JOBREG_ONE_CALL_BUDGET) on the random workload, executor only.

Usage::

    python -m tests.benchmarks.onecall --jobs 100000 --keep /tmp/bench-100k-redis --dsn ...

Loads nothing: it starts redis-server on data kept by ``compare --keep`` and runs every query of
the workload with the one-call path off and on, interleaved (so both see the same machine load),
through the executor and the record read the API makes (no HTTP). Per variant: the median over
queries of each query's p50 time, round trips (commands and pipelines sent) and slowest Redis
call (SLOWLOG), and the queries the variants answer differently (there must be none).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from api.params import parse_query
from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import load_settings
from tests.benchmarks import harness, pg
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.workload import workload

SENT = [0]


def _count_sends() -> None:
    """Count what the client sends (one per command, one per pipeline): the query's round trips."""
    original = Connection.send_packed_command

    async def counting(self: Connection, command: Any, check_health: bool = True) -> None:
        SENT[0] += 1
        await original(self, command, check_health)

    Connection.send_packed_command = counting  # type: ignore[method-assign]


async def _one(ex: Executor, r: aioredis.Redis, query: Any, repeat: int) -> tuple[float, int, float, Any]:
    times: list[float] = []
    answer: Any = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        page = await ex.run(plan(query, ex.keys))
        await ex.jobs(page.job_ids)
        times.append(time.perf_counter() - t0)
        answer = (page.total, page.job_ids, _kind(page.strategy))
    await r.slowlog_reset()
    before = SENT[0]
    page = await ex.run(plan(query, ex.keys))
    await ex.jobs(page.job_ids)
    sent = SENT[0] - before
    slow = max((e["duration"] for e in await r.slowlog_get(1000) if b"SLOWLOG" not in e["command"]), default=0)
    return statistics.median(times) * 1000, sent, slow / 1000, answer


async def _run(url: str, queries: Sequence[tuple[str, list[tuple[str, str]]]], repeat: int) -> None:
    r = aioredis.Redis.from_url(url)
    await r.config_set("slowlog-log-slower-than", 0)
    await r.config_set("slowlog-max-len", 1000)
    keys = Keys(harness.PREFIX)
    base = load_settings({"JOBREG_PREFIX": harness.PREFIX})
    variants = {"chunked": Executor(r, keys, base.__class__(**{**_fields(base), "one_call_budget": 0}))}
    variants["one-call"] = Executor(r, keys, base)
    rows: dict[str, list[tuple[float, int, float]]] = {name: [] for name in variants}
    differ = []
    kinds: list[str] = []
    for label, params in queries:
        query = parse_query(params)
        answers = []
        for name, ex in variants.items():
            ms, sent, slow, answer = await _one(ex, r, query, repeat)
            rows[name].append((ms, sent, slow))
            answers.append(answer)
        if answers[0][:2] != answers[1][:2]:
            differ.append(label)
        kinds.append(answers[1][2])
    n = len(queries)
    for name, got in rows.items():
        ms = sorted(x[0] for x in got)
        sent = sorted(x[1] for x in got)
        slow = sorted(x[2] for x in got)
        print(
            f"{name:9} median {statistics.median(ms):6.2f} ms  p90 {ms[int(n * 0.9)]:7.2f} ms  "
            f"round trips median {statistics.median(sent):4.1f} (one: {sum(s <= 2 for s in sent) / n:.0%} of queries "
            f"in <= 2)  slowest call median {statistics.median(slow):5.2f} ms  max {slow[-1]:6.2f} ms"
        )
    a, b = rows["chunked"], rows["one-call"]
    faster = sum(y[0] < x[0] for x, y in zip(a, b, strict=True)) / n
    print(f"one-call faster than chunked on {faster:.0%} of queries; answers differ on {len(differ)}: {differ[:5]}")
    print("one-call variant by plan: queries, median ms, median round trips, max slowest call")
    for kind in sorted(set(kinds), key=kinds.count, reverse=True):
        got = [row for row, k in zip(b, kinds, strict=True) if k == kind]
        print(
            f"  {len(got):4} {statistics.median(x[0] for x in got):7.2f} ms {statistics.median(x[1] for x in got):4.1f}"
            f" {max(x[2] for x in got):6.2f} ms  {kind}"
        )
    await r.aclose()


def _kind(strategy: str) -> str:
    """A plan's kind: its text without the sizes (digits), up to the first semicolon or two."""
    head = ";".join(strategy.split(";")[:2])
    return "".join("#" if c.isdigit() else c for c in head).replace("##", "#").replace("##", "#").replace("##", "#")


def _fields(settings: Any) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in settings.__struct_fields__}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", required=True, metavar="DIR", help="Redis data kept by compare --keep")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN, help="the peer's database (for sample job ids)")
    args = parser.parse_args(argv)
    data = make_plan(args.jobs, args.data_seed)
    queries = workload(data, harness.sample_job_ids(pg.connect(args.dsn), data), args.queries, args.seed)
    _count_sends()
    server = harness.start_redis(args.keep)
    try:
        asyncio.run(_run(server.url, queries, args.repeat))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
