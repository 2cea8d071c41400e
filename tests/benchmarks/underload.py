"""Under load: events/s published to the stream plus random queries/s, open loop, against idle.

A publisher process XADDs events at a fixed rate (by default new jobs at the tail of the stored data and
lifecycle steps of its unfinished jobs, as a backend publishes now; ``--load-shape spread`` for the former
load, see :mod:`tests.benchmarks.tailload`) for ``seconds`` while one
``jobreg worker`` folds them; meanwhile another process sends queries of the random workload on
schedule (open loop: a slow answer never delays the next request, and latency counts from the
scheduled send time; see :mod:`tests.benchmarks.loadgen`). The same query stream is first run
for a while with nothing published (idle). Reports p50/p99 both ways, failures by kind, the
consumer group's backlog during the run and how long it takes to get back to 0 once publishing
stops, and where the CPU went: Redis, the worker, the API (all its processes) and the two load
generators, in seconds of CPU per second, per event and per query.

Standalone (after ``compare`` loaded the data, or with ``--keep`` of a kept copy)::

    python -m tests.benchmarks.underload --jobs 1000000 --keep DIR --reuse --events-per-s 5000 \\
        --queries-per-s 200 --seconds 60 [--api-processes N] [--load-shape tail|spread]

A run mutates the kept data (the burst's jobs stay), and a second run of the same load on it republishes
events already applied (no effect): run each on a fresh copy of the kept data.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from tests.benchmarks import harness, loadgen, tailload
from tests.benchmarks.ingest import commands
from tests.benchmarks.pg_only import percentile
from tests.benchmarks.tailload import Load
from tests.benchmarks.workload import Query

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants (0 when gone)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(children)
        frontier += children
    return sum(ticks.get(p, 0) for p in family) / _TICK


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Phase:
    """One measured period: the query client's and publisher's outcomes, CPU s/s of each server."""

    seconds: float
    queries: loadgen.Outcome
    publisher: loadgen.Outcome | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds over the period and the drain after it
    span_s: float = 0.0  # the period and the drain
    max_backlog: int = 0
    drain_s: float = 0.0
    final_backlog: int = 0
    # Redis's own time per command over the period and the drain: (calls, µs); a script's includes its commands'.
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def cpu(self) -> dict[str, float]:
        """CPU seconds per second of each server."""
        return {name: s / self.span_s for name, s in self.cpu_s.items()}

    @property
    def answered(self) -> int:
        return self.queries.sent - sum(self.queries.errors.values())

    @property
    def applied(self) -> int:
        """Events the worker folded: those published, less what was left when the drain gave up."""
        return 0 if self.publisher is None else self.publisher.sent - max(0, self.final_backlog)


def _backlog(r: redis.Redis, stream: str) -> int:
    """Entries not yet applied: the group's lag plus its pending entries (-1 before it exists)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return -1
    if not groups:
        return -1
    group = groups[0]
    lag = group.get("lag")
    return (int(lag) if lag is not None else 0) + int(group["pending"])


def _events_stream() -> str:
    from registry.keys import Keys

    return Keys(harness.PREFIX).events


class _Cpu:
    """CPU seconds of the servers at one instant."""

    def __init__(self, r: redis.Redis, pids: dict[str, int]) -> None:
        self.r, self.pids = r, pids

    def read(self) -> dict[str, float]:
        return {"redis": redis_cpu_s(self.r), **{name: process_cpu_s(pid) for name, pid in self.pids.items()}}


def measure(
    url: str,
    base: str,
    headers: dict[str, str],
    queries: Sequence[Query],
    qps: float,
    eps: float,
    seconds: float,
    pids: dict[str, int],
    load: Load,
) -> Phase:
    """One period of ``qps`` queries/s (and ``eps`` events/s of ``load`` when > 0) from separate processes."""
    r = redis.Redis.from_url(url)
    stream = _events_stream()
    ctx = multiprocessing.get_context("spawn")
    go, start_at, results = ctx.Event(), ctx.Value("d", 0.0), ctx.Queue()
    jobs: list[tuple[str, tuple[Any, ...], float]] = [("queries", (base, headers, [p for _, p in queries]), qps)]
    if eps > 0:
        jobs.append(("publisher", (url, stream, 7, load), eps))
    readies = [ctx.Event() for _ in jobs]
    procs = [
        ctx.Process(target=loadgen.child, args=(kind, setup, rate, seconds, ready, go, start_at, results))
        for (kind, setup, rate), ready in zip(jobs, readies, strict=True)
    ]
    for proc in procs:
        proc.start()
    for ready in readies:
        ready.wait()
    cpu = _Cpu(r, pids)
    start_at.value = time.time() + 0.2
    go.set()
    time.sleep(max(0.0, start_at.value - time.time()))
    before, commands_before = cpu.read(), commands(r)
    max_backlog = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal max_backlog
        while not stop.wait(0.25):
            max_backlog = max(max_backlog, _backlog(r, stream))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    outcomes = dict(results.get() for _ in procs)
    # The publisher's last XADD is done by the time it reported (or the query client, without one).
    ended = time.perf_counter()
    backlog = _backlog(r, stream)
    while backlog > 0 and time.perf_counter() - ended < 120:
        time.sleep(0.01)
        backlog = _backlog(r, stream)
    drain_s = time.perf_counter() - ended
    stop.set()
    watcher.join()
    after, commands_after = cpu.read(), commands(r)
    for proc in procs:
        proc.join()
    wall = outcomes["queries"].wall_s
    r.close()
    return Phase(
        seconds=wall,
        queries=outcomes["queries"],
        publisher=outcomes.get("publisher"),
        cpu_s={name: after[name] - before[name] for name in after},
        span_s=wall + drain_s,
        max_backlog=max_backlog,
        drain_s=drain_s if eps > 0 else 0.0,
        final_backlog=backlog,
        commands={
            name: (calls - commands_before.get(name, (0, 0))[0], us - commands_before.get(name, (0, 0))[1])
            for name, (calls, us) in commands_after.items()
        },
    )


def _errors(errors: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in errors.most_common()) or "none"


def _gen_cpu(outcome: loadgen.Outcome | None) -> str:
    return "-" if outcome is None else f"{outcome.cpu_s / outcome.wall_s:.2f}"


def _costs(idle: Phase, loaded: Phase) -> str:
    """CPU per answered query (idle: queries alone) and per applied event (loaded, less its queries' share)."""
    if not idle.answered:
        return "  per query: nothing answered while idle"
    per_query = {k: idle.cpu_s[k] / idle.answered for k in ("redis", "api")}
    text = (
        f"  CPU per answered query (idle): redis {per_query['redis'] * 1e3:.2f} ms, api {per_query['api'] * 1e3:.2f} ms"
    )
    if loaded.applied > 0:
        per_event = {
            k: (loaded.cpu_s[k] - per_query.get(k, 0.0) * loaded.answered) / loaded.applied for k in ("redis", "worker")
        }
        text += (
            f"; per applied event ({loaded.applied:,}, less the queries' share): redis "
            f"{per_event['redis'] * 1e6:.0f} us, worker {per_event['worker'] * 1e6:.0f} us"
        )
    return text


def report(idle: Phase, loaded: Phase, qps: float, eps: float, shape: str = "tail") -> bool:
    """Print the comparison; whether the issue's targets were met."""
    lat, idle_lat = loaded.queries.latencies_ms, idle.queries.latencies_ms
    idle_p99, loaded_p99 = percentile(idle_lat, 99), percentile(lat, 99)
    errors = sum(loaded.queries.errors.values())
    ok = loaded_p99 <= 2 * idle_p99 and errors == 0 and loaded.drain_s <= 1
    pub = loaded.publisher
    rate = pub.sent / pub.wall_s if pub else 0.0
    print(
        f"\nunder load ({'ok' if ok else 'MISS'}): {pub.sent if pub else 0:,} events at {rate:,.0f} events/s "
        f"(asked {eps:,.0f}; load shape {shape}) + {qps:g} queries/s of the random workload, open loop, "
        f"{loaded.seconds:.0f} s "
        f"(idle: same queries, {idle.seconds:.0f} s)\n"
        f"  query p50 {percentile(lat, 50):.2f} ms, p99 {loaded_p99:.2f} ms, max {max(lat):.1f} ms; "
        f"idle p50 {percentile(idle_lat, 50):.2f} ms, p99 {idle_p99:.2f} ms -> p99 {loaded_p99 / idle_p99:.2f}x idle "
        f"(target <= 2x)\n"
        f"  failures under load: {_errors(loaded.queries.errors)}; idle: {_errors(idle.queries.errors)} (target 0)\n"
        f"  publisher: {_errors(pub.errors) if pub else '-'} XADD errors; backlog (lag + pending) up to "
        f"{loaded.max_backlog:,} entries, back to {loaded.final_backlog} {loaded.drain_s * 1e3:.0f} ms after the "
        f"last XADD (target <= 1 s)"
    )
    print("  CPU, s per s:      redis  worker    api  query client  publisher")
    for name, phase in (("idle", idle), ("loaded", loaded)):
        c = phase.cpu
        print(
            f"    {name:<14} {c['redis']:7.2f} {c.get('worker', 0):7.2f} {c['api']:6.2f}  "
            f"{_gen_cpu(phase.queries):>12}  {_gen_cpu(phase.publisher):>9}"
        )
    print(_costs(idle, loaded))
    for name, phase in (("idle", idle), ("loaded", loaded)):
        print(f"  Redis time by command, {name} (s over the period and drain): {_top_commands(phase)}")
    return ok


def _top_commands(phase: Phase, n: int = 10) -> str:
    """The commands Redis spent most time in (INFO commandstats; EVALSHA includes its scripts' commands)."""
    top = sorted(phase.commands.items(), key=lambda kv: -kv[1][1])[:n]
    return ", ".join(f"{name} {us / 1e6:.2f} s ({calls:,})" for name, (calls, us) in top if us > 0) or "-"


def run(
    url: str,
    base: str,
    api_pid: int,
    headers: dict[str, str],
    queries: Sequence[Query],
    eps: int,
    qps: int,
    seconds: float,
    load: Load,
) -> bool:
    """Measure idle, then under ``load``, and print the comparison; whether the targets were met."""
    worker = harness.jobreg(["worker"], url)
    try:
        pids = {"worker": worker.pid, "api": api_pid}
        time.sleep(2)  # the worker creates its group and settles
        idle = measure(url, base, headers, queries, qps, 0, max(10.0, seconds / 3), pids, load)
        loaded = measure(url, base, headers, queries, qps, eps, seconds, pids, load)
    finally:
        harness.stop(worker)
    return report(idle, loaded, qps, eps, load.shape)


def main(argv: Sequence[str] | None = None) -> int:
    from tests.benchmarks import pg
    from tests.benchmarks.datagen import make_plan
    from tests.benchmarks.workload import workload

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1, help="seed of the random workload")
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--queries", type=int, default=300, help="size of the random workload")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN, help="PostgreSQL holding the same data (for job ids)")
    parser.add_argument("--keep", metavar="DIR", help="Redis data kept by compare (loaded when missing)")
    parser.add_argument("--events-per-s", type=int, default=5000)
    parser.add_argument("--queries-per-s", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--api-processes", type=int, help="JOBREG_API_PROCESSES for the API (default: its own)")
    parser.add_argument(
        "--load-shape",
        choices=tailload.LOAD_SHAPES,
        default="tail",
        help="tail: new jobs after the stored ones, in its projects, and unfinished jobs moving on (default); "
        "spread: the former load, new projects with times spread over the stored range (tests/benchmarks/tailload.py)",
    )
    args = parser.parse_args(argv)

    plan = make_plan(args.jobs, args.data_seed)
    server = harness.start_redis(args.keep)
    r = redis.Redis.from_url(server.url)
    api = None
    try:
        harness.load_jobreg(r, server.url, plan, keep=args.keep is not None)
        conn = pg.connect(args.dsn)
        queries = workload(plan, harness.sample_job_ids(conn, plan), args.queries, args.seed)
        load = tailload.load_of(args.load_shape, plan, conn)
        conn.close()
        api, base = harness.jobreg_api(server.url, processes=args.api_processes)
        harness.wait_http(base)
        headers = {"Authorization": f"Bearer {harness.admin_token()}"}
        ok = run(server.url, base, api.pid, headers, queries, args.events_per_s, args.queries_per_s, args.seconds, load)
        return 0 if ok else 1
    finally:
        if api is not None:
            harness.stop(api)
        r.close()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
