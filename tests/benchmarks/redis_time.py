"""Redis time per query: every random-workload query run in-process against a kept copy, its Redis CPU
time and slowest command measured, for before/after comparisons of query strategies.

Run from the repository root (a kept copy from ``compare --keep DIR``; the copy is only read)::

    python -m tests.benchmarks.redis_time run --keep DIR --jobs 1000000 --out after.jsonl
    python -m tests.benchmarks.redis_time summary before.jsonl after.jsonl

``run`` writes one JSON line per query: its label, the executor's wall ms (plan, page, records; no
HTTP), the Redis ms (the private server's CPU time, user + system from ``INFO cpu``, over the query: the
SLOWLOG of Redis 7 logs a script's commands besides the script, so summing it counts them twice), the
slowest single command (SLOWLOG, threshold 0), the commands logged (scripts' included), the total and
the plan (medians over ``--runs``). Redis CPU per query is what decides how many queries one Redis
thread serves, and the machine's load skews it less than wall time (the two INFO calls add ~0.05 ms).
To compare two versions of the code on one copy, run each version's ``run`` in turn (interleaved,
e.g. A, B, B, A, to cancel the load's drift) and pass the files to ``summary`` (``A1 A2 B1 B2``: each
pair averaged). The id lists in the workload are made-up ids (as ``workload`` prints them), so those
queries match nothing here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import load_settings
from tests.benchmarks.datagen import make_plan
from tests.benchmarks.harness import PREFIX, start_redis
from tests.benchmarks.workload import workload
from tests.query_params import parse_params


def _fake_ids() -> list[str]:
    hexes = [f"{random.Random(i).getrandbits(128):032x}" for i in range(20)]
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]


async def run(keep: str, jobs: int, data_seed: int, seed: int, n: int, runs: int, out: str) -> None:
    queries = workload(make_plan(jobs, data_seed), _fake_ids(), n, seed)
    server = start_redis(keep)
    try:
        r = aioredis.Redis.from_url(server.url)
        keys = Keys(PREFIX)
        ex = Executor(r, keys, load_settings({}, redis_url=server.url, prefix=PREFIX))
        await r.config_set("slowlog-log-slower-than", 0)
        await r.config_set("slowlog-max-len", 1_000_000)
        with open(out, "w") as f:
            for label, params in queries:
                p = plan(parse_params(params), keys)
                await ex.listing(p)  # warm-up
                rows: list[tuple[float, float, float, int]] = []
                for _ in range(runs):
                    await r.slowlog_reset()
                    cpu = await _cpu(r)
                    t0 = time.perf_counter()
                    listing = await ex.listing(p)
                    wall = (time.perf_counter() - t0) * 1000
                    cpu = await _cpu(r) - cpu
                    # SLOWLOG logs the commands a script runs as well as the script (Redis 7): its
                    # largest entry is still the slowest call; the count includes scripts' commands.
                    log = await r.slowlog_get(1_000_000)
                    us = [e["duration"] for e in log if not e["command"].upper().startswith(b"SLOWLOG")]
                    rows.append((wall, cpu * 1000, max(us, default=0) / 1000, len(us)))
                med = [statistics.median(x) for x in zip(*rows, strict=True)]
                row = {"q": label, "wall": med[0], "redis": med[1], "max": med[2], "cmds": med[3]}
                f.write(json.dumps({**row, "total": listing.total, "plan": listing.strategy}) + "\n")
        await r.aclose()
    finally:
        server.stop()


async def _cpu(r: aioredis.Redis) -> float:
    """The private server's CPU seconds so far (user + system): only this benchmark's queries run there."""
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _load(path: str) -> dict[str, dict[str, Any]]:
    with open(path) as f:
        return {row["q"]: row for row in map(json.loads, f)}


def _pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def summary(paths: Sequence[str]) -> None:
    runs = [_load(p) for p in paths]
    half = len(runs) // 2
    sides = {"A": runs[:half] or runs[:1], "B": runs[half:]}
    qs = list(runs[0])
    mean = {
        s: {k: {q: statistics.mean(r[q][k] for r in rs) for q in qs} for k in ("redis", "wall", "max", "cmds")}
        for s, rs in sides.items()
    }
    for side, d in mean.items():
        r, w, m, c = (list(d[k].values()) for k in ("redis", "wall", "max", "cmds"))
        print(
            f"{side}: Redis ms/query mean {statistics.mean(r):.2f}"
            f" median {statistics.median(r):.2f} p90 {_pct(r, 0.9):.2f} p99 {_pct(r, 0.99):.1f} max {max(r):.1f};"
            f" wall mean {statistics.mean(w):.1f} median {statistics.median(w):.2f} max {max(w):.0f};"
            f" slowest call {max(m):.2f} ms, queries with a call over 2 ms: {sum(x > 2 for x in m)};"
            # Commands per query (scripts' included) do not depend on the machine's load, unlike times.
            f" commands/query mean {statistics.mean(c):,.0f} p90 {_pct(c, 0.9):,.0f} max {max(c):,.0f}"
        )
    a, b = sides["A"][0], sides["B"][0]
    changed = [q for q in qs if a[q]["plan"] != b[q]["plan"]]
    print(f"plans changed: {len(changed)}")
    for q in sorted(changed, key=lambda q: mean["B"]["redis"][q] - mean["A"]["redis"][q]):
        print(
            f"  {mean['A']['redis'][q]:9.2f} -> {mean['B']['redis'][q]:8.2f} ms, {mean['A']['cmds'][q]:,.0f} -> "
            f"{mean['B']['cmds'][q]:,.0f} commands  {q}: {b[q]['plan']}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="time every workload query against a kept copy")
    r.add_argument("--keep", required=True, metavar="DIR", help="the kept copy (compare --keep DIR)")
    r.add_argument("--jobs", type=int, default=1_000_000)
    r.add_argument("--data-seed", type=int, default=42)
    r.add_argument("--seed", type=int, default=1, help="seed of the random workload")
    r.add_argument("-n", type=int, default=300)
    r.add_argument("--runs", type=int, default=3, help="timed runs per query after a warm-up")
    r.add_argument("--out", required=True, help="JSON lines, one per query")
    s = sub.add_parser("summary", help="compare runs: A files then B files (as many of each)")
    s.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "run":
        asyncio.run(run(args.keep, args.jobs, args.data_seed, args.seed, args.n, args.runs, args.out))
    else:
        summary(args.files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
