"""jobreg vs PostgreSQL: load the same jobs into both, time the 16 GET /api/v2/jobs shapes.

Run from the repository root::

    python -m tests.benchmarks.run --jobs 100000
    python -m tests.benchmarks.run --jobs 1000000 --reuse     # keep PostgreSQL's loaded table

Steps: start a private redis-server; load N jobs through the real Projection (the writer the
worker uses) and the same jobs into PostgreSQL (pg.load); start one ``api`` process; run each
shape R times over HTTP (keep-alive) and in PostgreSQL, checking both give the same total and
page ids; print one comparison table, the slowest Redis command seen during the queries
(SLOWLOG), memory per job, and the ingest rate of one ``worker`` draining a pre-filled stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from api.params import parse_query
from registry.keys import Keys
from registry.query.executor import Executor
from registry.query.planner import plan as plan_query
from registry.settings import load_settings
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.benchmarks import live, pg
from tests.benchmarks.datagen import Plan, bench_info, iter_jobs, job_events, make_plan
from tests.benchmarks.harness import stop, wait_http
from tests.benchmarks.pg_only import percentile
from tests.benchmarks.shapes import shapes
from tests.conftest import RedisServer, free_port, start_redis_server

PREFIX = "bench"
INGEST_PREFIX = "bench-ingest"
GROUP = load_settings({}).group


# --------------------------------------------------------------------------- loading


async def load_jobreg(url: str, plan: Plan, chunk_jobs: int = 1000) -> tuple[int, float, float]:
    """Fold every job's events through the real Projection; returns (events, wall s, apply s)."""
    client = aioredis.Redis.from_url(url)
    projection = Projection(client, Keys(PREFIX), load_settings({}).set_to_bitmap_threshold)
    n_events, apply_s = 0, 0.0
    t0 = time.perf_counter()
    with tqdm(total=plan.n_jobs, unit="job", unit_scale=True, desc="jobreg load") as bar:
        for chunk in iter_jobs(plan, chunk_size=chunk_jobs):
            events = [decode_event(fields) for job in chunk for fields in job_events(job)]
            t1 = time.perf_counter()
            await projection.apply(events)
            apply_s += time.perf_counter() - t1
            n_events += len(events)
            bar.update(len(chunk))
    wall = time.perf_counter() - t0
    await client.aclose()
    return n_events, wall, apply_s


def load_pg(conn: Any, plan: Plan, reuse: bool) -> None:
    if reuse and pg.loaded_plan(conn) == (plan.n_jobs, plan.seed):
        print(f"PostgreSQL: reusing loaded table ({plan.n_jobs} jobs, seed {plan.seed})")
        return
    stats = pg.load(conn, plan)
    print(
        f"PostgreSQL: loaded {stats.rows} jobs in {stats.total_s:.1f} s "
        f"({stats.rows / stats.total_s:,.0f} jobs/s incl. indexes and VACUUM ANALYZE)"
    )


# --------------------------------------------------------------------------- processes


def layout_version() -> str:
    """The stored layout's version: a copy kept with another one is stale."""
    from registry.store.indexes import LAYOUT

    return str(LAYOUT)


def start_kept_redis(directory: str) -> RedisServer:
    """A private redis-server whose data is saved in ``directory`` and reloaded on the next run."""
    os.makedirs(directory, exist_ok=True)
    return start_redis_server(workdir=directory, dbfilename="bench.rdb", start_timeout_s=600)


def jobreg_process(command: list[str], url: str, prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "JOBREG_REDIS_URL": url, "JOBREG_PREFIX": prefix, "JOBREG_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "registry.ops.cli", *command], env=env)


# --------------------------------------------------------------------------- queries


# Commands slower than this go to the slow log. Logging every command (threshold 0) would
# slow Redis down itself, since commands run inside scripts are logged one by one.
SLOWLOG_US = 500
_OWN = ("slowlog", "config", "info")


def slowest_command(r: redis.Redis) -> tuple[float, str, int]:
    """(max duration ms, command, Redis commands run) since the last reset of both logs.

    The duration is that of the slowest command over SLOWLOG_US (0 when none was); the count
    comes from INFO commandstats and includes the commands scripts run.
    """

    def name(entry: dict[str, Any]) -> str:
        command = entry["command"]
        return command.decode(errors="replace") if isinstance(command, bytes) else str(command)

    entries = [e for e in r.slowlog_get(-1) if not name(e).lower().startswith(_OWN)]
    stats = r.info("commandstats")
    calls = sum(int(v["calls"]) for k, v in stats.items() if not k.removeprefix("cmdstat_").startswith(_OWN))
    if not entries:
        return 0.0, "-", calls
    worst = max(entries, key=lambda e: e["duration"])
    return worst["duration"] / 1e3, name(worst)[:100], calls


class Engine:
    """The query engine called in this process, without HTTP (as PostgreSQL's column is measured)."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.keys = Keys(PREFIX)

        async def connect() -> Executor:
            return Executor(aioredis.Redis.from_url(url), self.keys, load_settings({}))

        self.executor = self.runner.run(connect())

    def time_ms(self, params: Sequence[tuple[str, str]]) -> float:
        async def once() -> None:
            page = await self.executor.run(plan_query(parse_query(params), self.keys))
            await self.executor.jobs(page.job_ids)

        t0 = time.perf_counter()
        self.runner.run(once())
        return (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        self.runner.run(self.executor.redis.aclose())
        self.runner.close()


def compare(
    http: httpx.Client,
    conn: Any,
    r: redis.Redis,
    engine: Engine,
    repeat: int,
    queries: Sequence[tuple[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Time every shape in both systems (1 warm-up + ``repeat`` runs each); collect mismatches."""
    results, mismatches = [], []
    for name, params in tqdm(queries, desc="shapes"):
        http.get("/api/v2/jobs", params=params).raise_for_status()
        pg.run(conn, params)
        r.slowlog_reset()
        r.config_resetstat()
        api_ms, pg_ms, engine_ms = [], [], []
        body: dict[str, Any] = {}
        pg_total, pg_ids = 0, []
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = http.get("/api/v2/jobs", params=params)
            api_ms.append((time.perf_counter() - t0) * 1e3)
            if response.status_code != 200:
                mismatches.append(f"{name}: jobreg answered {response.status_code}: {response.text[:200]}")
                break
            body = response.json()
            engine_ms.append(engine.time_ms(params))
            pg_total, pg_ids, page_ms, count_ms = pg.run_timed(conn, params)
            pg_ms.append(page_ms + count_ms)
        slow_ms, slow_cmd, n_cmds = slowest_command(r)
        total = body.get("pagination", {}).get("total")
        ids = [job["id"] for job in body.get("data", [])]
        if body and total != pg_total:
            mismatches.append(f"{name}: total jobreg {total} != PostgreSQL {pg_total}")
        if body and ids != pg_ids:
            first = next((i for i, (a, b) in enumerate(zip(ids, pg_ids, strict=False)) if a != b), None)
            where = f"first difference at row {first}" if first is not None else "lengths differ"
            mismatches.append(f"{name}: page ids differ ({len(ids)} vs {len(pg_ids)} rows, {where})")
        results.append(
            {
                "name": name,
                "total": total if total is not None else -1,
                "pg_total": pg_total,
                "api_p50": percentile(api_ms, 50) if api_ms else float("nan"),
                "api_p99": percentile(api_ms, 99) if api_ms else float("nan"),
                "engine_p50": percentile(engine_ms, 50) if engine_ms else float("nan"),
                "pg_p50": percentile(pg_ms, 50) if pg_ms else float("nan"),
                "pg_p99": percentile(pg_ms, 99) if pg_ms else float("nan"),
                "slow_ms": slow_ms,
                "slow_cmd": slow_cmd,
                "cmds": n_cmds / max(1, len(api_ms) + len(engine_ms)),  # commandstats saw both runs
            }
        )
    return results, mismatches


def print_table(results: Sequence[dict[str, Any]]) -> None:
    header = (
        f"{'shape':<38} {'total':>9} {'jobreg p50':>10} {'p99':>8} {'PG p50':>8} {'p99':>8} "
        f"{'PG/jr':>6} {'engine p50':>10} {'max cmd ms':>10} {'cmds/q':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r["pg_p50"] / r["api_p50"] if r["api_p50"] else float("nan")
        flag = "" if r["total"] == r["pg_total"] else f"  <-- PG total {r['pg_total']}"
        print(
            f"{r['name']:<38} {r['total']:>9} {r['api_p50']:>10.2f} {r['api_p99']:>8.2f} "
            f"{r['pg_p50']:>8.2f} {r['pg_p99']:>8.2f} {ratio:>6.2f} {r['engine_p50']:>10.2f} {r['slow_ms']:>10.2f} "
            f"{r['cmds']:>6.0f}{flag}"
        )


# --------------------------------------------------------------------------- ingest


def publish_all(r: redis.Redis, stream: str, plan: Plan, max_events: int) -> tuple[int, int]:
    """XADD the plan's jobs' events, whole jobs only, up to ``max_events``: (events, jobs)."""
    n = jobs = 0
    with tqdm(total=max_events, unit="ev", unit_scale=True, desc="XADD") as bar:
        for chunk in iter_jobs(plan, chunk_size=2000):
            pipe = r.pipeline(transaction=False)
            for job in chunk:
                events = job_events(job)
                if n + len(events) > max_events:
                    break
                for fields in events:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                n += len(events)
                jobs += 1
            pipe.execute()
            bar.n = n
            bar.refresh()
            if n + 4 > max_events:
                break
    return n, jobs


def group_backlog(r: redis.Redis, stream: str) -> tuple[int, int] | None:
    """(lag, pending) of the workers' group, None before the worker created it."""
    for group in r.xinfo_groups(stream):
        if group["name"] in (GROUP, GROUP.encode()):
            lag = group.get("lag")
            return (int(lag) if lag is not None else -1), int(group["pending"])
    return None


def measure_ingest(url: str, r: redis.Redis, max_events: int, seed: int) -> None:
    plan = make_plan(max(1000, max_events // 2), seed)
    keys = Keys(INGEST_PREFIX)
    n_events, n_jobs = publish_all(r, keys.events, plan, max_events)
    worker = jobreg_process(["worker"], url, INGEST_PREFIX)
    try:
        t_start = time.perf_counter()
        t_first: float | None = None
        with tqdm(total=n_events, unit="ev", unit_scale=True, desc="worker drain") as bar:
            while True:
                backlog = group_backlog(r, keys.events)
                if backlog is not None:
                    lag, pending = backlog
                    if t_first is None and lag < n_events:
                        t_first = time.perf_counter()
                    bar.n = n_events - max(lag, 0) - pending
                    bar.refresh()
                    if lag == 0 and pending == 0:
                        break
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited with {worker.returncode}")
                time.sleep(0.05)
        t_end = time.perf_counter()
    finally:
        stop(worker)
    listed = r.bitcount(keys.all)
    dead = r.xlen(keys.dead)
    since_first = t_end - (t_first or t_start)
    print(
        f"\ningest, one worker: {n_events:,} events of {n_jobs:,} jobs drained in {t_end - t_start:.1f} s "
        f"from process start = {n_events / (t_end - t_start):,.0f} events/s "
        f"({n_events / since_first:,.0f} events/s from first delivery); "
        f"{listed:,} jobs listed, {dead} dead letters"
    )
    if listed != n_jobs or dead:
        print(f"!!! INGEST MISMATCH: expected {n_jobs} listed jobs and no dead letters")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="number of jobs (>= 1000)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per shape")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN)
    parser.add_argument("--reuse", action="store_true", help="keep PostgreSQL's table if same jobs/seed")
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the loaded Redis data in DIR and reuse it when jobs, seed and layout match"
    )
    parser.add_argument("--ingest-events", type=int, default=1_000_000, help="events the ingest worker drains")
    parser.add_argument("--lag-rate", type=int, default=5000, help="events/s while measuring visibility lag")
    parser.add_argument("--lag-seconds", type=float, default=20)
    args = parser.parse_args(argv)

    plan = make_plan(args.jobs, args.seed)
    queries = shapes(bench_info(plan))
    server = start_kept_redis(args.keep) if args.keep else start_redis_server()
    r = redis.Redis.from_url(server.url)
    api: subprocess.Popen[bytes] | None = None
    marker = f"{PREFIX}:loaded"
    wanted = f"{args.jobs}:{args.seed}:{layout_version()}"
    try:
        # -- load
        if args.keep and (r.get(marker) or b"").decode() == wanted:
            mem0, mem1 = 0, int(r.get(f"{marker}:bytes") or 0)
            print(f"jobreg: reusing the data kept in {args.keep} ({args.jobs:,} jobs, seed {args.seed})")
        else:
            r.flushall()
            mem0 = int(r.info("memory")["used_memory"])
            n_events, wall, apply_s = asyncio.run(load_jobreg(server.url, plan))
            mem1 = int(r.info("memory")["used_memory"])
            print(
                f"jobreg: loaded {args.jobs:,} jobs ({n_events:,} events) in {wall:.1f} s = "
                f"{args.jobs / wall:,.0f} jobs/s, {n_events / wall:,.0f} events/s "
                f"(Projection.apply alone: {n_events / apply_s:,.0f} events/s)"
            )
            if args.keep:
                r.set(marker, wanted)
                r.set(f"{marker}:bytes", mem1 - mem0)
                r.save()
        with pg.connect(args.dsn) as conn:
            load_pg(conn, plan, args.reuse)
            size = pg.relation_bytes(conn)
            print(
                f"memory per job: jobreg {(mem1 - mem0) / args.jobs:,.0f} B (Redis used_memory growth "
                f"{(mem1 - mem0) / 2**20:,.1f} MiB); PostgreSQL {size.total / args.jobs:,.0f} B on disk "
                f"(table {size.table / 2**20:,.1f} MiB + indexes {size.indexes / 2**20:,.1f} MiB)"
            )

            # -- queries
            port = free_port()
            api = jobreg_process(["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"], server.url, PREFIX)
            base = f"http://127.0.0.1:{port}"
            wait_http(base)
            r.config_set("slowlog-max-len", 100_000)
            r.config_set("slowlog-log-slower-than", SLOWLOG_US)
            engine = Engine(server.url)
            with httpx.Client(base_url=base, timeout=120) as http:
                results, mismatches = compare(http, conn, r, engine, args.repeat, queries)
            engine.close()
            r.config_set("slowlog-log-slower-than", 5000)

        print(
            f"\n{args.jobs:,} jobs, {args.repeat} runs per shape after 1 warm-up; ms; jobreg over HTTP "
            "(keep-alive), PG = page + count query, engine = jobreg planner + executor + records in-process (no HTTP); "
            f"max cmd = slowest Redis command over {SLOWLOG_US} us (SLOWLOG), 0 if none; cmds/q from commandstats\n"
        )
        print_table(results)
        worst = max(results, key=lambda x: x["slow_ms"])
        print(f"\nslowest Redis command: {worst['slow_ms']:.2f} ms in '{worst['name']}': {worst['slow_cmd']}")
        if mismatches:
            print("\n" + "!" * 70)
            for line in mismatches:
                print(f"!!! MISMATCH {line}")
            print("!" * 70)
        else:
            print("all shapes: jobreg and PostgreSQL agree on total and page ids")
        # -- live: requests/s on shape 4, then visibility lag with a worker consuming a live stream
        print("\nthroughput, one api process, shape 4: " + live.measure_rps(base, queries[3][1]))
        worker = jobreg_process(["worker"], server.url, PREFIX)
        try:
            lag = live.measure_lag(server.url, PREFIX, base, args.lag_rate, args.lag_seconds, args.seed + 2)
        finally:
            stop(worker)
        print(live.lag_line(lag))
        stop(api)
        api = None

        # -- ingest
        measure_ingest(server.url, r, args.ingest_events, args.seed + 1)
        return 1 if mismatches else 0
    finally:
        if api is not None:
            stop(api)
        r.close()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
