"""Growing a cluster registry from 3 to 6 masters at a moderate size (issue 14): what each partition's move
costs, and the pause it causes.

Usage::

    python -m tests.benchmarks.grow [--jobs 150000] [--batch 100]

Starts a local 3-master Redis Cluster (tests/cluster.py), bulk-loads ``--jobs`` jobs into P = 16 partitions
(tests/benchmarks/bulk.py, each partition's loader on the master serving it), then, while a query loop asks
every partition for its first page (no filter, limit 100, exact total) through jobreg's route and a backend
XADDs ``started`` events to every partition stream (about 2,500/s), adds 3 empty masters (``redis-cli
--cluster add-node``) and runs ``jobreg cluster rebalance``'s code (registry/ops/rebalance.py). Printed per
move: keys, seconds, MB moved (MEMORY USAGE summed before), and the longest query on the moving partition
during its move next to the median and longest query on the other partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid

import redis

from registry.connection import node_url
from registry.keys import Keys
from registry.nodes import ClusterRoute, open_route
from registry.ops import rebalance
from registry.partition import Partitions, tag_slot
from registry.settings import load_settings
from registry.wire.publisher import Publisher, build_fields
from tests.benchmarks.bulk import BulkLoader, _prepared_in_parallel
from tests.benchmarks.datagen import make_plan
from tests.cluster import LocalCluster, add_masters, local_cluster
from tests.partitioned import Asker, settings_for

PREFIX = "jobreg"
P = 16


def load(cluster: LocalCluster, n_jobs: int) -> float:
    parts = Partitions(PREFIX, P)
    settings = load_settings({})
    loaders = [
        BulkLoader(
            node_url(cluster.url, "127.0.0.1", cluster.master_of_slot(tag_slot(k.tag)).port),
            PREFIX,
            settings.set_to_bitmap_threshold,
            settings.change_log_retention,
            keys=k,
        )
        for k in parts.keys
    ]
    t0 = time.perf_counter()
    for loader in loaders:
        loader.start()
    for prepared in _prepared_in_parallel(make_plan(n_jobs, 42), loaders[0].processes):
        for job_id, state, row in prepared:
            loaders[parts.of(job_id)].add(job_id, state, row)
    n = sum(loader.finish() for loader in loaders)
    with cluster.client() as c:
        c.set(Keys(PREFIX).partitions, P)
    print(f"bulk-loaded {n:,} jobs into {P} partitions in {time.perf_counter() - t0:.0f} s")
    return time.perf_counter() - t0


def partition_bytes(cluster: LocalCluster, keys: Keys) -> int:
    """MEMORY USAGE of every key of the partition's slot."""
    node = cluster.master_of_slot(tag_slot(keys.tag))
    total = 0
    with node.client() as c:
        slot = tag_slot(keys.tag)
        names = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1_000_000)
        pipe = c.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        total = sum(int(x or 0) for x in pipe.execute())
    return total


async def query_loop(asker: Asker, stop: asyncio.Event, calls: list[tuple[int, float, float]]) -> None:
    """One partition's first page, over and over (a task per partition: a waiting partition holds up no other)."""
    while not stop.is_set():
        start = time.monotonic()
        await asker.ask([("limit", "100")])
        calls.append((asker.i, start, time.monotonic()))
        await asyncio.sleep(0.005)


def backend(cluster: LocalCluster, stop: threading.Event, count: list[int]) -> None:
    with redis.RedisCluster.from_url(cluster.url, socket_timeout=2.0) as client:
        publisher = Publisher(client, partitions=Partitions(PREFIX, P))  # type: ignore[arg-type]
        while not stop.is_set():
            events = [build_fields("started", uuid.uuid4()) for _ in range(50)]
            try:
                publisher.publish_many(events)
                count[0] += len(events)
            except Exception as exc:
                count[1] += 1
                print(f"backend: {exc}"[:200])
            time.sleep(0.02)


async def main(n_jobs: int, batch: int) -> None:
    with local_cluster(masters=3) as cluster:
        await asyncio.to_thread(load, cluster, n_jobs)
        parts = Partitions(PREFIX, P)
        sizes = {i: partition_bytes(cluster, k) for i, k in enumerate(parts.keys)}
        route = await open_route(cluster.url, parts, socket_timeout=5.0)
        assert isinstance(route, ClusterRoute)
        calls: list[tuple[int, float, float]] = []
        stop, stop_backend, published = asyncio.Event(), threading.Event(), [0, 0]
        askers = [Asker(route, i, settings_for(PREFIX)) for i in range(P)]
        queries = [asyncio.create_task(query_loop(a, stop, calls)) for a in askers]
        threading.Thread(target=backend, args=(cluster, stop_backend, published), daemon=True).start()
        await asyncio.sleep(2)
        t_add = time.monotonic()
        await asyncio.to_thread(add_masters, cluster, 3)
        print(f"3 masters added in {time.monotonic() - t_add:.1f} s")
        spans: list[tuple[rebalance.Move, float, float, int]] = []
        started: list[float] = []
        nodes = rebalance.Cluster(cluster.url, socket_timeout=5.0)
        t0 = time.monotonic()
        await asyncio.to_thread(
            rebalance.rebalance,
            nodes,
            parts,
            batch=batch,
            on_move=lambda m: started.append(time.monotonic()),
            on_done=lambda d: spans.append((d.move, started[-1], time.monotonic(), d.keys)),
        )
        total_s = time.monotonic() - t0
        nodes.close()
        await asyncio.sleep(1)
        stop.set()
        stop_backend.set()
        await asyncio.gather(*queries)
        await route.aclose()
        print(f"{len(spans)} moves in {total_s:.1f} s; backend: {published[0]:,} events, {published[1]} errors")
        print("| partition | keys | MB | move s | its longest query | others' median / longest query |")
        print("|---|---|---|---|---|---|")
        for move, a, b, keys in spans:
            [i] = move.partitions
            mine = [e - s for j, s, e in calls if j == i and e >= a and s <= b]
            others = [e - s for j, s, e in calls if j != i and s >= a and e <= b]
            print(
                f"| {i} | {keys:,} | {sizes[i] / 1e6:.1f} | {b - a:.2f} | {max(mine, default=0) * 1000:.0f} ms"
                f" | {statistics.median(others or [0]) * 1000:.1f} / {max(others, default=0) * 1000:.0f} ms |"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=150_000)
    parser.add_argument("--batch", type=int, default=rebalance.BATCH)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.batch))
