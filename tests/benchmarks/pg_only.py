"""PostgreSQL-only benchmark: generate jobs, load them, time the 16 query shapes.

Run from the repository root::

    python -m tests.benchmarks.pg_only --jobs 100000
    python -m tests.benchmarks.pg_only --jobs 1000000 --reuse      # keep the loaded table
    python -m tests.benchmarks.pg_only --jobs 100000 --verify      # check against reference.py
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from tests.benchmarks import pg
from tests.benchmarks.datagen import bench_info, iter_jobs, make_plan
from tests.benchmarks.reference import evaluate, first_mismatch
from tests.benchmarks.shapes import Shape, shapes


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def time_shapes(conn: psycopg.Connection[Any], queries: Sequence[Shape], repeat: int) -> list[dict[str, Any]]:
    """Run each shape once to warm up, then ``repeat`` times; per-shape timings in ms."""
    results = []
    for name, params in queries:
        pg.run(conn, params)
        page_ms, count_ms, both_ms = [], [], []
        total, ids = 0, []
        for _ in range(repeat):
            total, ids, p_ms, c_ms = pg.run_timed(conn, params)
            page_ms.append(p_ms)
            count_ms.append(c_ms)
            both_ms.append(p_ms + c_ms)
        results.append(
            {
                "name": name,
                "total": total,
                "returned": len(ids),
                "ids": ids,
                "page_p50": percentile(page_ms, 50),
                "count_p50": percentile(count_ms, 50),
                "p50": percentile(both_ms, 50),
                "p99": percentile(both_ms, 99),
            }
        )
    return results


def print_table(results: Sequence[dict[str, Any]]) -> None:
    header = f"{'shape':<38} {'total':>9} {'rows':>4} {'page p50':>9} {'count p50':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<38} {r['total']:>9} {r['returned']:>4} {r['page_p50']:>9.2f} "
            f"{r['count_p50']:>9.2f} {r['p50']:>8.2f} {r['p99']:>8.2f}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="number of jobs (>= 1000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per shape")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN)
    parser.add_argument("--reuse", action="store_true", help="skip loading if same jobs/seed")
    parser.add_argument("--verify", action="store_true", help="compare with a Python reference")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    plan = make_plan(args.jobs, args.seed)
    info = bench_info(plan)
    queries = shapes(info)
    with pg.connect(args.dsn) as conn:
        if args.reuse and pg.loaded_plan(conn) == (args.jobs, args.seed):
            print(f"reusing loaded table ({args.jobs} jobs, seed {args.seed})")
        else:
            stats = pg.load(conn, plan, progress=not args.no_progress)
            print(
                f"loaded {stats.rows} jobs in {stats.total_s:.1f} s (generate+COPY "
                f"{stats.copy_s:.1f} s, indexes {stats.index_s:.1f} s, "
                f"VACUUM ANALYZE {stats.vacuum_analyze_s:.1f} s)"
            )
        size = pg.relation_bytes(conn)
        print(
            f"on disk: table {size.table / 2**20:.1f} MiB + indexes {size.indexes / 2**20:.1f} "
            f"MiB = {size.total / args.jobs:.0f} bytes/job ({len(pg.INDEXES)} indexes)"
        )
        print(
            f"largest project {info.largest_project_size} jobs, mid {info.mid_project_size}, "
            f"tiny {info.tiny_project_size}; user window {info.user_window[0]} .. "
            f"{info.user_window[1]}\n"
        )
        t0 = time.perf_counter()
        results = time_shapes(conn, queries, args.repeat)
        print_table(results)
        print(f"\n(timed {args.repeat} runs per shape after 1 warm-up; {time.perf_counter() - t0:.1f} s)")

    if args.verify:
        expected = evaluate(iter_jobs(plan), queries)
        bad = 0
        for r in results:
            problem = first_mismatch(expected[r["name"]], (r["total"], r["ids"]))
            if problem is not None:
                bad += 1
                print(f"MISMATCH {r['name']}: {problem}")
        print("verify: all shapes match the reference" if not bad else f"verify: {bad} mismatches")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
