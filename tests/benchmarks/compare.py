"""jobreg vs a PostgreSQL peer behind the same HTTP stack, measured as a user evaluating it would.

One command, from the repository root (PostgreSQL 15 on 127.0.0.1:5432, redis-server on PATH)::

    python -m tests.benchmarks.compare --jobs 1000000 --seed 1 [--keep .bench-redis --reuse]

It loads the same generated jobs into a private redis-server (through the Projection the worker
uses) and into PostgreSQL (COPY, composite B-tree indexes matching each order); starts ``jobreg
api`` (auth on, HS256) and the peer (:mod:`tests.benchmarks.pg_service`: Litestar + uvicorn +
psycopg pool, same envelope, same token check); then, over HTTP with an admin token:

1. the floor: a lookup of an id that matches nothing, on both;
2. a random workload (``--queries`` from :mod:`tests.benchmarks.workload`, seeded by ``--seed``):
   every total and page compared with the peer's (a mismatch fails the run); the ratio's
   distribution, the ten worst queries with jobreg's ``X-Jobreg-Plan``;
3. the sixteen shapes of :mod:`tests.benchmarks.shapes` as a second table;
4. under load (:mod:`tests.benchmarks.underload`): events/s + queries/s, open loop;
5. memory per job (:mod:`tests.benchmarks.memory`): records and indexes, streams apart.

Ratios are peer time / jobreg time (p50 of ``--repeat`` runs after a warm-up), so > 1 means
jobreg is faster; "SQL" is the peer's two statements alone, without HTTP. ``--keep DIR`` keeps
Redis's data in DIR and ``--reuse`` PostgreSQL's table, so a rerun does not reload.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

import httpx
import redis
from tqdm import tqdm

from tests.benchmarks import harness, memory, pg, tailload, underload
from tests.benchmarks.datagen import bench_info, make_plan
from tests.benchmarks.pg_only import percentile
from tests.benchmarks.shapes import shapes
from tests.benchmarks.workload import Params, Query, query_string, workload

#: Redis calls slower than this are logged (the target is 2 ms; logging everything would slow Redis).
SLOWLOG_US = 1000
#: From this many jobs compare loads jobreg with the bulk loader (tests/benchmarks/bulk.py) unless told.
BULK_FROM = 2_000_000
_OWN = ("slowlog", "config", "info", "memory", "scan", "xinfo")


@dataclass
class Timing:
    """One query measured on both sides (ms)."""

    label: str
    params: Params
    total: int
    jr_p50: float
    jr_p99: float
    peer_p50: float
    peer_p99: float
    sql_p50: float
    plan: str
    max_call_ms: float
    max_call: str
    error: str | None

    @property
    def ratio(self) -> float:
        return self.peer_p50 / self.jr_p50 if self.jr_p50 else float("nan")


def slowest_call(r: redis.Redis) -> tuple[float, str]:
    """The slowest Redis call over SLOWLOG_US since the last reset (0 and '-' when none)."""

    def name(entry: dict[str, Any]) -> str:
        command = entry["command"]
        return command.decode(errors="replace") if isinstance(command, bytes) else str(command)

    entries = [e for e in r.slowlog_get(-1) if not name(e).lower().startswith(_OWN)]
    if not entries:
        return 0.0, "-"
    worst = max(entries, key=lambda e: e["duration"])
    return worst["duration"] / 1e3, name(worst)[:80]


def _difference(jr: dict[str, Any], peer: dict[str, Any]) -> str | None:
    # jobreg's pagination also carries next_page_token (cursor pagination), which the peer has not.
    paging = {k: jr["pagination"][k] for k in ("total", "start", "end")}
    if paging != peer["pagination"]:
        return f"pagination jobreg {paging} != peer {peer['pagination']}"
    a, b = jr["data"], peer["data"]
    if [j["id"] for j in a] != [j["id"] for j in b]:
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x["id"] != y["id"]), min(len(a), len(b)))
        return f"page ids differ ({len(a)} vs {len(b)} rows, first at row {first})"
    for x, y in zip(a, b, strict=True):
        if x != y:
            field = next(k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k))
            return f"job {x['id']} differs in {field}: jobreg {x.get(field)!r} != peer {y.get(field)!r}"
    return None


def _get(client: httpx.Client, params: Params) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = client.get("/api/v2/jobs", params=params)
    return (time.perf_counter() - t0) * 1e3, response


def time_query(
    jr: httpx.Client, peer: httpx.Client, conn: Any, r: redis.Redis, label: str, params: Params, repeat: int
) -> Timing:
    """One warm-up on each side, then ``repeat`` alternating runs; bodies compared once."""
    _, jr_first = _get(jr, params)
    _, peer_first = _get(peer, params)
    error = None
    if jr_first.status_code != 200 or peer_first.status_code != 200:
        error = f"HTTP jobreg {jr_first.status_code} peer {peer_first.status_code}: {jr_first.text[:120]}"
    else:
        error = _difference(jr_first.json(), peer_first.json())
    r.slowlog_reset()
    jr_ms, peer_ms, sql_ms = [], [], []
    for _ in range(repeat):
        ms, _response = _get(jr, params)
        jr_ms.append(ms)
        ms, _response = _get(peer, params)
        peer_ms.append(ms)
        _, _, page_ms, count_ms = pg.run_timed(conn, params)
        sql_ms.append(page_ms + count_ms)
    call_ms, call = slowest_call(r)
    total = jr_first.json()["pagination"]["total"] if jr_first.status_code == 200 else -1
    return Timing(
        label=label,
        params=params,
        total=total,
        jr_p50=median(jr_ms),
        jr_p99=percentile(jr_ms, 99),
        peer_p50=median(peer_ms),
        peer_p99=percentile(peer_ms, 99),
        sql_p50=median(sql_ms),
        plan=jr_first.headers.get("X-Jobreg-Plan", "-"),
        max_call_ms=call_ms,
        max_call=call,
        error=error,
    )


def time_all(
    jr: httpx.Client, peer: httpx.Client, conn: Any, r: redis.Redis, queries: Sequence[Query], repeat: int, desc: str
) -> list[Timing]:
    return [time_query(jr, peer, conn, r, label, params, repeat) for label, params in tqdm(queries, desc=desc)]


def floor(jr: httpx.Client, peer: httpx.Client, repeat: int = 200) -> tuple[float, float]:
    """p50 ms of a lookup of an id that matches nothing, jobreg and peer."""
    params: Params = [("id", "00000000-0000-4000-8000-000000000000")]
    for client in (jr, peer):
        _get(client, params)[1].raise_for_status()
    jr_ms, peer_ms = [], []
    for _ in range(repeat):
        jr_ms.append(_get(jr, params)[0])
        peer_ms.append(_get(peer, params)[0])
    return median(jr_ms), median(peer_ms)


# --------------------------------------------------------------------------- reports


def _check(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def print_distribution(timings: Sequence[Timing]) -> None:
    ratios = sorted(t.ratio for t in timings)
    faster = sum(1 for x in ratios if x > 1) / len(ratios)
    worst_p99 = max(timings, key=lambda t: t.jr_p99)
    worst_call = max(timings, key=lambda t: t.max_call_ms)
    print(
        f"random workload, {len(ratios)} queries; ratio = peer p50 / jobreg p50 (HTTP, auth on)\n"
        f"  [{_check(faster >= 0.95)}] jobreg faster on {faster:.1%} (target >= 95%)\n"
        f"  [{_check(median(ratios) >= 3)}] median ratio {median(ratios):.2f}x (target >= 3x)\n"
        f"         p10 ratio {percentile(ratios, 10):.2f}x, p90 {percentile(ratios, 90):.2f}x\n"
        f"  [{_check(ratios[0] >= 0.8)}] worst ratio {ratios[0]:.2f}x (target >= 0.8x)\n"
        f"  [{_check(worst_p99.jr_p99 <= 10)}] jobreg p99 <= {worst_p99.jr_p99:.2f} ms on every query "
        f"(target 10 ms; worst: {worst_p99.label})\n"
        f"  [{_check(worst_call.max_call_ms <= 2)}] slowest Redis call {worst_call.max_call_ms:.2f} ms "
        f"(target 2 ms; {worst_call.max_call} in {worst_call.label})\n"
        f"  jobreg p50 over queries: median {median(t.jr_p50 for t in timings):.2f} ms; "
        f"peer {median(t.peer_p50 for t in timings):.2f} ms; SQL alone {median(t.sql_p50 for t in timings):.2f} ms"
    )


def print_worst(timings: Sequence[Timing], k: int = 10) -> None:
    print(f"\nthe {k} worst ratios (ms; plan = X-Jobreg-Plan)")
    for t in sorted(timings, key=lambda t: t.ratio)[:k]:
        print(
            f"  {t.ratio:5.2f}x  jobreg {t.jr_p50:7.2f}  peer {t.peer_p50:7.2f}  SQL {t.sql_p50:7.2f}  "
            f"total {t.total:>7}  {t.label}\n"
            f"         ?{query_string(t.params)}\n         plan: {t.plan}"
        )


def print_table(timings: Sequence[Timing], title: str) -> None:
    print(f"\n{title}")
    header = (
        f"{'query':<40} {'total':>8} {'jobreg p50':>10} {'p99':>7} {'peer p50':>9} {'p99':>7} "
        f"{'SQL p50':>8} {'ratio':>6} {'max call':>8}"
    )
    print(header)
    print("-" * len(header))
    for t in timings:
        print(
            f"{t.label[:40]:<40} {t.total:>8} {t.jr_p50:>10.2f} {t.jr_p99:>7.2f} {t.peer_p50:>9.2f} "
            f"{t.peer_p99:>7.2f} {t.sql_p50:>8.2f} {t.ratio:>6.2f} {t.max_call_ms:>8.2f}"
        )
    ratios = [t.ratio for t in timings]
    print(
        f"  [{_check(min(ratios) > 1)}] every one faster (worst {min(ratios):.2f}x); "
        f"[{_check(median(ratios) >= 5)}] median {median(ratios):.2f}x (target >= 5x); "
        f"[{_check(max(t.jr_p99 for t in timings) <= 10)}] max jobreg p99 {max(t.jr_p99 for t in timings):.2f} ms"
    )


def report_errors(timings: Sequence[Timing]) -> int:
    bad = [t for t in timings if t.error]
    if not bad:
        print("every total and page agrees with PostgreSQL's")
    for t in bad:
        print(f"!!! MISMATCH {t.label}: {t.error}\n    ?{query_string(t.params)}")
    return len(bad)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="number of jobs (>= 1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random workload")
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the generated data")
    parser.add_argument("--queries", type=int, default=300, help="size of the random workload")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query after a warm-up")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN)
    parser.add_argument("--keep", metavar="DIR", help="keep Redis's data in DIR; reuse it when it matches")
    parser.add_argument("--reuse", action="store_true", help="reuse PostgreSQL's table when it matches")
    parser.add_argument("--load-seconds", type=float, default=60, help="duration of the under-load run (0: skip)")
    parser.add_argument(
        "--load-shape", choices=tailload.LOAD_SHAPES, default="tail", help="the under-load run's events (underload)"
    )
    parser.add_argument("--events-per-s", type=int, default=5000)
    parser.add_argument("--queries-per-s", type=int, default=200)
    parser.add_argument(
        "--bulk",
        action="store_true",
        help="load jobreg with the bulk loader (same keys as the apply path, several times faster); "
        "the default from 2,000,000 jobs",
    )
    parser.add_argument("--api-processes", type=int, help="JOBREG_API_PROCESSES for jobreg's API (default: its own)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-key memory split")
    args = parser.parse_args(argv)

    plan = make_plan(args.jobs, args.data_seed)
    server = harness.start_redis(args.keep)
    r = redis.Redis.from_url(server.url)
    procs = []
    try:
        grown = harness.load_jobreg(
            r, server.url, plan, keep=args.keep is not None, bulk=args.bulk or args.jobs >= BULK_FROM
        )
        conn = pg.connect(args.dsn)
        harness.load_pg(conn, plan, args.reuse)
        queries = workload(plan, harness.sample_job_ids(conn, plan), args.queries, args.seed)
        jr_proc, jr_base = harness.jobreg_api(server.url, processes=args.api_processes)
        peer_proc, peer_base = harness.peer_api(args.dsn)
        procs += [jr_proc, peer_proc]
        harness.wait_http(jr_base)
        harness.wait_http(peer_base)
        headers = {"Authorization": f"Bearer {harness.admin_token()}"}
        r.config_set("slowlog-max-len", 10_000)
        r.config_set("slowlog-log-slower-than", SLOWLOG_US)
        with (
            httpx.Client(base_url=jr_base, headers=headers, timeout=120) as jr,
            httpx.Client(base_url=peer_base, headers=headers, timeout=120) as peer,
        ):
            floors = floor(jr, peer)
            random_timings = time_all(jr, peer, conn, r, queries, args.repeat, "random workload")
            shape_timings = time_all(jr, peer, conn, r, shapes(bench_info(plan)), args.repeat, "16 shapes")
        print(
            f"\n{args.jobs:,} jobs, data seed {args.data_seed}, workload seed {args.seed}, {args.repeat} runs "
            f"per query after a warm-up\nfloor (an id matching nothing, HTTP, auth on): jobreg {floors[0]:.2f} ms, "
            f"peer {floors[1]:.2f} ms\n"
        )
        print_distribution(random_timings)
        print_worst(random_timings)
        print_table(shape_timings, "the sixteen shapes")
        mismatches = report_errors(random_timings) + report_errors(shape_timings)
        if args.load_seconds > 0:
            underload.run(
                server.url,
                jr_base,
                jr_proc.pid,
                headers,
                queries,
                args.events_per_s,
                args.queries_per_s,
                args.load_seconds,
                tailload.load_of(args.load_shape, plan, conn),
            )
        memory.report(r, harness.PREFIX, args.jobs, grown, per_key=not args.no_memory)
        size = pg.relation_bytes(conn)
        print(
            f"PostgreSQL on disk: {size.total / args.jobs:,.0f} B/job (table {size.table / 2**20:,.0f} MiB "
            f"+ {len(pg.INDEXES)} indexes {size.indexes / 2**20:,.0f} MiB)"
        )
        conn.close()
        return 1 if mismatches else 0
    finally:
        for proc in procs:
            harness.stop(proc)
        r.close()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
