"""The random workload on a 3-master Redis Cluster (P = 16) against a standalone registry (P = 1), over HTTP (issue 14).

One command, from the repository root (``redis-server`` and ``redis-cli`` on the PATH)::

    python -m tests.benchmarks.cluster_workload --keep .bench-cluster --one .bench-one \
        [--source /work/bench/1m] [--jobs 1000000] [--queries 300] [--seed 1] [--repeat 7]

It loads the benchmark's generated jobs (datagen, seed 42) into a local 3-master cluster
(tests/cluster.py's nodes, with their data, ports and ``nodes.conf`` kept in ``--keep`` so a rerun
restarts the same cluster instead of reloading), P = 16, each job into its partition by the bulk
loader (what the apply path writes, each partition's loader on the master of its slot); the
standalone registry is ``compare --keep``'s data: a copy of ``--source``'s ``bench.rdb`` into
``--one`` (never the source itself), or bulk-loaded there when there is none. Then it starts
``jobreg api`` on each (auth on, one admin token, the same HTTP stack) and runs:

1. the random workload (tests/benchmarks/workload.py, ``--queries``, seed ``--seed``): one warm-up on
   each side, every total and page compared (creation_order is numbered handle * P + i on the
   cluster, so it is checked to name the job's partition, and a page ordered by creation_order is
   compared by its total and length only), then ``--repeat`` alternating timed runs; per query the
   p50/p99 on each, the Redis CPU per run on each (INFO used_cpu_*, summed over the 3 masters), and
   the ratio of the cluster's p99 to the standalone's;
2. fixed rows: offset 500,000 (no filter, a status filter, a project filter), a filtered page on an
   order without a range index, the first page, and a page token at depth 500,000 against the
   offset page it must equal.

A mismatch fails the run (exit code 1). The load average is printed before and after each part:
3 masters, the standalone server, both APIs and this client share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import redis
from tqdm import tqdm

from tests.benchmarks import harness
from tests.benchmarks.datagen import Plan, largest_project, make_plan
from tests.benchmarks.pg_only import percentile
from tests.benchmarks.workload import Params, query_string, workload
from tests.cluster import START_TIMEOUT_S, LocalCluster, Node, _ping, _settled, _wait
from tests.conftest import RedisServer, free_port

PARTITIONS = 16
MASTERS = 3
#: A query whose warm-up took longer is timed fewer times (this many seconds of runs per side at most).
BUDGET_S = 6.0


# --------------------------------------------------------------------------- a kept local cluster


def _node(root: Path, port: int, bus_port: int) -> Node:
    from registry.store.record import REDIS_ARGS

    workdir = root / f"node-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
        *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
        # A master busy with a long script or a SAVE on this shared machine must not be marked failed.
        *("--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "15000"),
        *("--dir", str(workdir), "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no"),
        *REDIS_ARGS,
    ]
    with (workdir / "redis.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    return Node(port, bus_port, proc, workdir)


def kept_cluster(keep: str) -> LocalCluster:
    """A 3-master cluster with its data in ``keep``: restarted on its recorded ports when it exists."""
    root = Path(keep).resolve()
    meta = root / "cluster.json"
    fresh = not meta.exists()
    if fresh:
        root.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port()) for _ in range(MASTERS)]
    else:
        ports = [tuple(p) for p in json.loads(meta.read_text())["ports"]]
    nodes = [_node(root, port, bus) for port, bus in ports]
    cluster = LocalCluster(nodes, MASTERS, 0, root)
    try:
        deadline = time.monotonic() + 600  # a kept node reads its dump first
        for node in nodes:
            _wait(lambda node=node: _ping(node), f"redis-server on {node.port}", deadline)  # type: ignore[misc]
        if fresh:
            create = ["redis-cli", "--cluster", "create", *[n.address for n in nodes], "--cluster-yes"]
            done = subprocess.run(create, capture_output=True, text=True, timeout=START_TIMEOUT_S)
            if "[OK] All 16384 slots covered" not in done.stdout:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
            meta.write_text(json.dumps({"ports": ports}))
        _wait(lambda: _settled(nodes, MASTERS), "cluster_state:ok on every node", time.monotonic() + 60)
    except BaseException:
        stop_kept(cluster)
        raise
    return cluster


def stop_kept(cluster: LocalCluster) -> None:
    """Stop the nodes, keeping their data (saved after loading; the API's writes are page tokens only)."""
    for node in cluster.nodes:
        if node.process.poll() is None:
            node.process.terminate()
    for node in cluster.nodes:
        try:
            node.process.wait(30)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


def load_cluster(cluster: LocalCluster, plan: Plan) -> None:
    """Bulk-load ``plan`` into P partitions, each by a loader on its slot's master; stamp P; save."""
    from registry.keys import Keys
    from registry.partition import Partitions, tag, tag_slot
    from registry.settings import load_settings
    from tests.benchmarks.bulk import BulkLoader, _prepared_in_parallel

    marker = Path(cluster.workdir) / "loaded.txt"
    wanted = f"{plan.n_jobs}:{plan.seed}:{PARTITIONS}:{harness.layout_version()}"
    if marker.exists() and marker.read_text() == wanted:
        print(f"cluster: reusing the kept data ({plan.n_jobs:,} jobs in {PARTITIONS} partitions)")
        return
    for node in cluster.nodes:
        with node.client() as c:
            c.flushall()
    settings = load_settings({})
    parts = Partitions(harness.PREFIX, PARTITIONS)
    url = {n.port: f"redis://{n.address}/0" for n in cluster.nodes}
    owner = [url[cluster.master_of_slot(tag_slot(tag(harness.PREFIX, PARTITIONS, i))).port] for i in range(PARTITIONS)]
    loaders = [
        BulkLoader(owner[i], harness.PREFIX, settings.set_to_bitmap_threshold, settings.change_log_retention, keys=k)
        for i, k in enumerate(parts.keys)
    ]
    t0 = time.perf_counter()
    with tqdm(total=plan.n_jobs, unit="job", unit_scale=True, desc=f"cluster bulk load, P = {PARTITIONS}") as bar:
        for loader in loaders:
            loader.start()
        for prepared in _prepared_in_parallel(plan, loaders[0].processes):
            for job_id, state, row in prepared:
                loaders[parts.of(job_id)].add(job_id, state, row)
            bar.update(len(prepared))
        n = sum(loader.finish() for loader in loaders)
    asyncio.run(_stamp_partitions(url[cluster.node_of(Keys(harness.PREFIX).partitions).port]))
    for node in cluster.nodes:
        with node.client() as c:
            c.save()
    marker.write_text(wanted)
    print(f"cluster: bulk-loaded {n:,} jobs into {PARTITIONS} partitions in {time.perf_counter() - t0:.0f} s")


async def _stamp_partitions(url: str) -> None:
    import redis.asyncio as aioredis

    from registry.store import partitions

    client = aioredis.Redis.from_url(url)
    try:
        await partitions.load(client, harness.PREFIX, PARTITIONS, cluster=True)
    finally:
        await client.aclose()


def standalone(one: str, source: str | None, plan: Plan) -> tuple[RedisServer, redis.Redis]:
    """The one-partition registry: a copy of ``source``'s kept data (compare --keep), else bulk-loaded."""
    rdb = Path(one) / "bench.rdb"
    if not rdb.exists() and source and (Path(source) / "bench.rdb").exists():
        Path(one).mkdir(parents=True, exist_ok=True)
        print(f"standalone: copying {source}/bench.rdb into {one}")
        shutil.copy(Path(source) / "bench.rdb", rdb)
    server = harness.start_redis(one)
    r = redis.Redis.from_url(server.url)
    harness.load_jobreg(r, server.url, plan, keep=True, bulk=True)
    return server, r


def sample_ids(r: redis.Redis, plan: Plan, k: int = 200) -> list[str]:
    """``k`` job ids spread over the data by creation order (compare's sample, read from the uuid array)."""
    from registry.keys import Keys

    uuids = Keys(harness.PREFIX).uuids
    raw = [r.getrange(uuids, h * 16, h * 16 + 15) for h in (1 + i * plan.n_jobs // k for i in range(k))]
    hexes = [b.hex() for b in raw]
    return sorted(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes)


# --------------------------------------------------------------------------- timing over HTTP


@dataclass
class Timing:
    """One query on both registries: ms per run, Redis CPU ms per run, and what was compared."""

    label: str
    params: Params
    total: int
    one: list[float]
    many: list[float]
    one_cpu: float
    many_cpu: float
    plan: str
    checked: str
    error: str | None

    @property
    def ratio(self) -> float:
        """The cluster's p99 over the standalone registry's."""
        return percentile(self.many, 99) / percentile(self.one, 99)


def _cpu(clients: Sequence[redis.Redis]) -> float:
    total = 0.0
    for c in clients:
        info = c.info("cpu")
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def _get(client: httpx.Client, params: Params) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    response = client.get("/api/v2/jobs", params=params)
    return (time.perf_counter() - t0) * 1e3, response


def difference(one: dict[str, Any], many: dict[str, Any], order_by: str | None) -> tuple[str, str | None]:
    """What was compared of the two answers, and the first difference (None when they agree)."""
    from registry.partition import partition_of

    paging = [{k: x["pagination"][k] for k in ("total", "start", "end")} for x in (one, many)]
    if paging[0] != paging[1]:
        return "pagination", f"pagination standalone {paging[0]} != cluster {paging[1]}"
    a, b = one["data"], many["data"]
    if len(a) != len(b):
        return "pagination", f"{len(a)} rows on the standalone, {len(b)} on the cluster"
    for job in b:
        if job["creation_order"] % PARTITIONS != partition_of(job["id"], PARTITIONS):
            return "pagination", f"job {job['id']}: creation_order {job['creation_order']} names another partition"
    if order_by == "creation_order":
        # handle * P + i orders the jobs differently from one registry's handles: totals and lengths only.
        return "total and length", None
    if [j["id"] for j in a] != [j["id"] for j in b]:
        first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x["id"] != y["id"])
        return "page", f"page ids differ (first at row {first})"
    for x, y in zip(a, b, strict=True):
        field = next((k for k in sorted(set(x) | set(y)) if k != "creation_order" and x.get(k) != y.get(k)), None)
        if field is not None:
            return "page", f"job {x['id']} differs in {field}: standalone {x.get(field)!r} != cluster {y.get(field)!r}"
    return "page", None


@dataclass
class Side:
    """One registry as the benchmark sees it: its HTTP client and its Redis servers (for CPU)."""

    http: httpx.Client
    servers: list[redis.Redis]


def time_query(one: Side, many: Side, label: str, params: Params, repeat: int) -> Timing:
    """A warm-up on each side (the answers compared), then alternating timed runs."""
    ms_one, first_one = _get(one.http, params)
    ms_many, first_many = _get(many.http, params)
    checked, error = "-", None
    if first_one.status_code != 200 or first_many.status_code != 200:
        error = f"HTTP standalone {first_one.status_code} cluster {first_many.status_code}: {first_many.text[:160]}"
    else:
        checked, error = difference(first_one.json(), first_many.json(), dict(params).get("order_by"))
    runs = max(1, min(repeat, int(BUDGET_S * 1e3 / max(ms_one, ms_many, 1e-3))))
    times: tuple[list[float], list[float]] = ([], [])
    cpu = [0.0, 0.0]
    for _ in range(runs):
        for k, side in enumerate((one, many)):
            c0 = _cpu(side.servers)
            times[k].append(_get(side.http, params)[0])
            cpu[k] += _cpu(side.servers) - c0
    total = first_one.json()["pagination"]["total"] if first_one.status_code == 200 else -1
    plan = first_many.headers.get("X-Jobreg-Plan", "-")
    return Timing(label, params, total, *times, cpu[0] / runs * 1e3, cpu[1] / runs * 1e3, plan, checked, error)


def _token_at(side: Side, base: Params, depth: int) -> Params:
    """The query of the page at ``depth`` through a page token (from the page just before it)."""
    _, response = _get(side.http, [*base, ("offset", str(depth - 100)), ("limit", "100")])
    response.raise_for_status()
    token = response.json()["pagination"]["next_page_token"]
    return [*base, ("limit", "100"), ("page_token", token)]


def fixed_rows(one: Side, many: Side, plan: Plan, repeat: int) -> list[Timing]:
    """Offset 500,000 with and without filters, a fallback order with a filter, the first page and a token at depth."""
    deep = plan.n_jobs // 2
    project = largest_project(plan).id
    created: Params = [("order_by", "created_at"), ("order_by_direction", "DESC")]
    rows: list[tuple[str, Params]] = [
        ("first page, created_at DESC", [*created, ("limit", "100")]),
        (f"offset {deep:,}, created_at DESC", [*created, ("limit", "100"), ("offset", str(deep))]),
        (f"offset {deep:,}, status=DONE", [*created, ("status", "DONE"), ("limit", "100"), ("offset", str(deep))]),
        (
            f"offset {deep // 2:,}, huge project",
            [*created, ("project_id", project), ("limit", "100"), ("offset", str(deep // 2))],
        ),
        (
            f"offset {deep:,}, huge project",
            [*created, ("project_id", project), ("limit", "100"), ("offset", str(deep))],
        ),
        (
            "offset 10,000, updated_at, status=DONE",
            [("order_by", "updated_at"), ("status", "DONE"), ("limit", "100"), ("offset", "10000")],
        ),
        (
            "offset 10,000, creation_order, status=ERROR",
            [("order_by", "creation_order"), ("status", "ERROR"), ("limit", "100"), ("offset", "10000")],
        ),
    ]
    out = [time_query(one, many, label, params, repeat) for label, params in tqdm(rows, desc="fixed rows")]
    # The token pages: each registry's own token (tokens are sealed per registry), each checked against
    # the offset page on the other registry.
    token_one, token_many = _token_at(one, created, deep), _token_at(many, created, deep)
    pair = _time_pair(one, many, token_one, token_many, repeat)
    by_offset = [*created, ("limit", "100"), ("offset", str(deep))]
    _, expected = _get(one.http, by_offset)
    _, got = _get(many.http, token_many)
    # A token page says where it is (start, end) as the offset page does: compared whole.
    checked, error = difference(expected.json(), got.json(), "created_at")
    out.append(
        Timing(
            f"page token at {deep:,}, created_at DESC",
            token_many,
            expected.json()["pagination"]["total"],
            *pair,
            got.headers.get("X-Jobreg-Plan", "-"),
            checked,
            error,
        )
    )
    return out


def _time_pair(
    one: Side, many: Side, q_one: Params, q_many: Params, repeat: int
) -> tuple[list[float], list[float], float, float]:
    times: tuple[list[float], list[float]] = ([], [])
    cpu = [0.0, 0.0]
    for _ in range(repeat):
        for k, (side, q) in enumerate(((one, q_one), (many, q_many))):
            c0 = _cpu(side.servers)
            times[k].append(_get(side.http, q)[0])
            cpu[k] += _cpu(side.servers) - c0
    return times[0], times[1], cpu[0] / repeat * 1e3, cpu[1] / repeat * 1e3


# --------------------------------------------------------------------------- reports


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_rows(timings: Sequence[Timing], title: str) -> None:
    print(f"\n{title}")
    header = (
        f"{'query':<46} {'total':>8} {'one p50':>8} {'p99':>8} {'P=16 p50':>9} {'p99':>8} {'p99 x':>6} "
        f"{'cpu one':>8} {'cpu P=16':>9} {'runs':>4}"
    )
    print(header)
    print("-" * len(header))
    for t in timings:
        print(
            f"{t.label[:46]:<46} {t.total:>8} {median(t.one):>8.2f} {percentile(t.one, 99):>8.2f} "
            f"{median(t.many):>9.2f} {percentile(t.many, 99):>8.2f} {t.ratio:>6.2f} {t.one_cpu:>8.2f} "
            f"{t.many_cpu:>9.2f} {len(t.many):>4}"
        )


def print_summary(timings: Sequence[Timing]) -> None:
    ratios = sorted(t.ratio for t in timings)
    every_one = [ms for t in timings for ms in t.one]
    every_many = [ms for t in timings for ms in t.many]
    within = sum(1 for x in ratios if x <= 2) / len(ratios)
    p99_one, p99_many = percentile(every_one, 99), percentile(every_many, 99)
    cpu_one, cpu_many = (sum(getattr(t, k) for t in timings) / len(timings) for k in ("one_cpu", "many_cpu"))
    print(
        f"\nrandom workload, {len(timings)} queries; ratio = cluster p99 / standalone p99 per query (HTTP, auth on)\n"
        f"  ratio median {median(ratios):.2f}x, p90 {percentile(ratios, 90):.2f}x, worst {ratios[-1]:.2f}x; "
        f"{within:.0%} of queries within 2x\n"
        f"  every run of every query: p50 standalone {median(every_one):.2f} ms, cluster {median(every_many):.2f} ms; "
        f"p99 standalone {p99_one:.2f} ms, cluster {p99_many:.2f} ms ({p99_many / p99_one:.2f}x; target <= 2x)\n"
        f"  Redis CPU per query, mean: standalone {cpu_one:.2f} ms, cluster (3 masters summed) {cpu_many:.2f} ms"
    )
    print("\nthe 10 worst ratios (plan = the cluster's X-Jobreg-Plan)")
    for t in sorted(timings, key=lambda t: -t.ratio)[:10]:
        print(
            f"  {t.ratio:6.2f}x  p99 {percentile(t.one, 99):8.2f} -> {percentile(t.many, 99):8.2f} ms  "
            f"total {t.total:>7}  {t.label}\n         ?{query_string(t.params)}\n         plan: {t.plan[:200]}"
        )


def report_errors(timings: Sequence[Timing]) -> int:
    bad = [t for t in timings if t.error]
    compared = {k: sum(1 for t in timings if t.checked == k) for k in ("page", "total and length")}
    print(
        f"\ncompared: {compared['page']} whole pages, {compared['total and length']} by total and length "
        f"(ordered by creation_order), {len(bad)} mismatches"
    )
    for t in bad:
        print(f"!!! MISMATCH {t.label}: {t.error}\n    ?{query_string(t.params)}")
    return len(bad)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1, help="seed of the random workload")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per query and side after a warm-up")
    parser.add_argument("--fixed-repeat", type=int, default=20, help="timed runs of each fixed row")
    parser.add_argument("--keep", default=".bench-cluster", help="the cluster's kept data (nodes, ports)")
    parser.add_argument("--one", default=".bench-one", help="the standalone registry's kept data")
    parser.add_argument("--source", default=None, help="copy the standalone data from this compare --keep dir")
    parser.add_argument("--only-fixed", action="store_true", help="skip the random workload")
    args = parser.parse_args(argv)

    plan = make_plan(args.jobs, 42)
    print(f"start: {_load()}")
    server, r_one = standalone(args.one, args.source, plan)
    cluster = kept_cluster(args.keep)
    procs = []
    masters = [n.client() for n in cluster.nodes]
    try:
        load_cluster(cluster, plan)
        queries = workload(plan, sample_ids(r_one, plan), args.queries, args.seed)
        (p_one, base_one), (p_many, base_many) = harness.jobreg_api(server.url), harness.jobreg_api(cluster.url)
        procs += [p_one, p_many]
        harness.wait_http(base_one)
        harness.wait_http(base_many)
        headers = {"Authorization": f"Bearer {harness.admin_token()}"}
        with (
            httpx.Client(base_url=base_one, headers=headers, timeout=300) as h_one,
            httpx.Client(base_url=base_many, headers=headers, timeout=300) as h_many,
        ):
            one, many = Side(h_one, [r_one]), Side(h_many, masters)
            print(f"timing: {_load()}")
            random_rows = []
            if not args.only_fixed:
                random_rows = [
                    time_query(one, many, label, params, args.repeat)
                    for label, params in tqdm(queries, desc="random workload")
                ]
                print(f"after the random workload: {_load()}")
            fixed = fixed_rows(one, many, plan, args.fixed_repeat)
            print(f"after the fixed rows: {_load()}")
        print(
            f"\n{args.jobs:,} jobs (data seed 42), workload seed {args.seed}; standalone P = 1 vs a local "
            f"{MASTERS}-master cluster, P = {PARTITIONS}, all on this machine's {os.cpu_count()} cores; "
            f"ms over HTTP; cpu = Redis CPU ms per run"
        )
        if random_rows:
            print_rows(random_rows, "random workload, per query")
            print_summary(random_rows)
        print_rows(fixed, "fixed rows")
        return 1 if report_errors([*random_rows, *fixed]) else 0
    finally:
        for proc in procs:
            harness.stop(proc)
        for c in masters:
            c.close()
        r_one.close()
        server.stop()
        stop_kept(cluster)


if __name__ == "__main__":
    raise SystemExit(main())
