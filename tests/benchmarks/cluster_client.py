"""Issue 14's client paths, measured: one scatter of P small script calls, one per partition, on a local cluster.

Usage::

    python -m tests.benchmarks.cluster_client [--partitions 16 48] [--rounds 2000] [--concurrency 16]

Starts a local 3-master Redis Cluster (tests/cluster.py) and a standalone redis-server, puts a
small partition under each tag of registry/partition.py (a bitmap of --bits bits and a counter),
and times one *scatter*: a read-only `#!lua flags=no-writes` call per partition returning its
BITCOUNT and counter, the shape of a query's per-partition count. Paths:

- ``cluster-gather``: redis-py's async ``RedisCluster``, one ``EVALSHA`` per partition, all
  awaited together (``asyncio.gather``); the client routes each by its key's slot.
- ``cluster-serial``: the same calls awaited one after another (what concurrency saves).
- ``node-pipelines``: a plain async client per master, the partitions' calls grouped by the
  master that serves their slot, one non-transactional pipeline per master, the pipelines awaited
  together (redis-py's cluster pipeline refuses ``EVALSHA``, so this is done by hand from
  ``CLUSTER SLOTS``).
- ``route-pipelines``: the same through jobreg's ``ClusterRoute`` (registry/nodes.py): each
  partition's client from ``route.client(i)``, one pipeline per distinct client (master).
- ``route-calls``: one ``route.call(i, ...)`` per partition (a single EVALSHA each, with the
  route's MOVED/failover handling around it), all awaited together.
- ``standalone-pipeline``: all P calls in one pipeline to one standalone redis-server (the same
  partitioned layout without a cluster), and ``standalone-one``: one call (today, P = 1).

Then the route's recovery costs: a map refresh (``route.refresh()``: CLUSTER SLOTS from a node,
parsed, partitions repointed) and a call sent to the wrong master (a stale map: the MOVED reply,
the slot repointed, the call run again) next to the same call on a fresh map.

Rounds are run in interleaved blocks so every path sees the same machine load. Printed per path:
p50/p99 of one scatter (sequential rounds) and scatters per second with --concurrency in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from registry import partition
from registry.keys import Keys
from registry.nodes import ClusterRoute, open_route
from registry.partition import Partitions, tag_slot
from tests.cluster import LocalCluster, local_cluster
from tests.conftest import start_redis_server

COUNT = """#!lua flags=no-writes
-- COUNT: one partition's share of a query, in miniature. KEYS[1] a bitmap, KEYS[2] a counter.
return {redis.call('BITCOUNT', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
Scatter = Callable[[], Awaitable[list[Any]]]


def _keys(tag: str) -> list[str]:
    k = Keys(tag)
    return [k.all, k.seq]


def _fill(client: redis.Redis, tags: list[str], bits: int) -> None:
    for i, t in enumerate(tags):
        bitmap, seq = _keys(t)
        client.setbit(bitmap, bits - 1, 1)
        client.bitfield(bitmap).set("u8", 0, 0xFF).set("u8", bits // 2 - 8, i & 0xFF).execute()
        client.set(seq, bits)


class Paths:
    """Every path's scatter for ``partitions`` partitions, with its clients."""

    def __init__(
        self, cluster: LocalCluster, standalone_url: str, partitions: int, sha: str, route: ClusterRoute
    ) -> None:
        self.route = route
        self.tags = partition.tags("bench", partitions)
        self.keys = [_keys(t) for t in self.tags]  # built once, as node-pipelines' grouping is
        self.sha = sha
        self.cl = aioredis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        self.nodes = {n.port: aioredis.Redis(port=n.port) for n in cluster.nodes}
        self.by_node: dict[int, list[list[str]]] = defaultdict(list)
        for t in self.tags:
            self.by_node[cluster.node_of(_keys(t)[0]).port].append(_keys(t))
        self.standalone = aioredis.Redis.from_url(standalone_url)

    async def cluster_gather(self) -> list[Any]:
        return list(await asyncio.gather(*(self.cl.evalsha(self.sha, 2, *_keys(t)) for t in self.tags)))

    async def cluster_serial(self) -> list[Any]:
        return [await self.cl.evalsha(self.sha, 2, *_keys(t)) for t in self.tags]

    async def node_pipelines(self) -> list[Any]:
        async def one(port: int, calls: list[list[str]]) -> list[Any]:
            pipe = self.nodes[port].pipeline(transaction=False)
            for keys in calls:
                pipe.evalsha(self.sha, 2, *keys)
            return list(await pipe.execute())

        parts = await asyncio.gather(*(one(port, calls) for port, calls in self.by_node.items()))
        return [r for part in parts for r in part]

    async def route_pipelines(self) -> list[Any]:
        groups: dict[int, tuple[aioredis.Redis, list[list[str]]]] = {}
        for i, keys in enumerate(self.keys):
            client = self.route.client(i)
            groups.setdefault(id(client), (client, []))[1].append(keys)

        async def one(client: aioredis.Redis, calls: list[list[str]]) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for keys in calls:
                pipe.evalsha(self.sha, 2, *keys)
            return list(await pipe.execute())

        parts = await asyncio.gather(*(one(c, calls) for c, calls in groups.values()))
        return [r for part in parts for r in part]

    async def route_calls(self) -> list[Any]:
        def call(keys: list[str]) -> Callable[[aioredis.Redis], Awaitable[Any]]:
            return lambda client: client.evalsha(self.sha, 2, *keys)  # type: ignore[return-value]

        return list(await asyncio.gather(*(self.route.call(i, call(k)) for i, k in enumerate(self.keys))))

    async def standalone_pipeline(self) -> list[Any]:
        pipe = self.standalone.pipeline(transaction=False)
        for t in self.tags:
            pipe.evalsha(self.sha, 2, *_keys(t))
        return list(await pipe.execute())

    async def standalone_one(self) -> list[Any]:
        return [await self.standalone.evalsha(self.sha, 2, *_keys(self.tags[0]))]

    def named(self) -> dict[str, Scatter]:
        return {
            "cluster-gather": self.cluster_gather,
            "cluster-serial": self.cluster_serial,
            "node-pipelines": self.node_pipelines,
            "route-pipelines": self.route_pipelines,
            "route-calls": self.route_calls,
            "standalone-pipeline": self.standalone_pipeline,
            "standalone-one": self.standalone_one,
        }

    async def close(self) -> None:
        await self.cl.aclose()
        await self.standalone.aclose()
        for c in self.nodes.values():
            await c.aclose()


async def _latencies(scatter: Scatter, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        await scatter()
        out.append(time.perf_counter() - start)
    return out


async def _throughput(scatter: Scatter, seconds: float, concurrency: int) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await scatter()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


async def measure(cluster: LocalCluster, standalone_url: str, args: argparse.Namespace) -> None:
    for p in args.partitions:
        tags = partition.tags("bench", p)
        with redis.Redis.from_url(standalone_url) as s:
            _fill(s, tags, args.bits)
            sha = s.script_load(COUNT)
        with cluster.client() as c:
            _fill(c, tags, args.bits)
        for node in cluster.nodes:
            with node.client() as nc:
                nc.script_load(COUNT)
        route = await open_route(cluster.url, Partitions("bench", p))
        assert isinstance(route, ClusterRoute)
        paths = Paths(cluster, standalone_url, p, sha, route)
        named = paths.named()
        want = await paths.standalone_pipeline()
        for name, scatter in named.items():  # every path answers the same (and warms up)
            got = await scatter()
            assert got == want[: len(got)], name
            await _latencies(scatter, 50)
        lat: dict[str, list[float]] = defaultdict(list)
        per_block = max(1, args.rounds // args.blocks)
        for _ in range(args.blocks):
            for name, scatter in named.items():
                lat[name] += await _latencies(scatter, per_block)
        rate: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.blocks // 2 or 1):
            for name, scatter in named.items():
                rate[name].append(await _throughput(scatter, args.seconds, args.concurrency))
        spread = sorted(len(v) for v in paths.by_node.values())
        print(f"\nP = {p} partitions over 3 masters (partitions per master: {spread}), {args.bits}-bit bitmaps")
        print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'scatters/s':>12}  (x{args.concurrency} in flight)")
        for name in named:
            xs = sorted(lat[name])
            p50, p99 = statistics.median(xs) * 1e3, xs[int(0.99 * (len(xs) - 1))] * 1e3
            print(f"{name:<22}{p50:>9.3f}{p99:>9.3f}{statistics.median(rate[name]):>12.0f}")
        await recovery_costs(route, paths.sha, args.rounds // 10)
        await route.aclose()
        await paths.close()


async def recovery_costs(route: ClusterRoute, sha: str, rounds: int) -> None:
    """p50 ms of a map refresh, and of one call on a fresh map vs on a stale one (MOVED, repoint, again)."""
    keys = route.partitions.keys[0]
    slot, right = tag_slot(keys.tag), route.owner(0)
    wrong = next(route.owner(i) for i in range(route.partitions.count) if route.owner(i) != right)
    assert right is not None and wrong is not None

    def one(client: aioredis.Redis) -> Awaitable[Any]:
        return client.evalsha(sha, 2, keys.all, keys.seq)  # type: ignore[return-value]

    timed: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        start = time.perf_counter()
        await route.refresh()
        timed["refresh (CLUSTER SLOTS)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await route.call(0, one)
        timed["call, fresh map"].append(time.perf_counter() - start)
        route._point(slot, wrong)
        start = time.perf_counter()
        await route.call(0, one)
        timed["call, stale map (MOVED)"].append(time.perf_counter() - start)
        assert route.owner(0) == right
    for name, xs in timed.items():
        print(f"{name:<28}{statistics.median(xs) * 1e3:>9.3f} ms p50  ({len(xs)} rounds)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, nargs="+", default=[16, 48])
    ap.add_argument("--rounds", type=int, default=2000, help="sequential scatters per path (latency)")
    ap.add_argument("--blocks", type=int, default=10, help="interleaved blocks the rounds are split into")
    ap.add_argument("--seconds", type=float, default=1.0, help="per throughput block and path")
    ap.add_argument("--concurrency", type=int, default=16, help="scatters in flight for the throughput")
    ap.add_argument("--bits", type=int, default=1 << 16, help="bitmap size per partition (BITCOUNT work)")
    args = ap.parse_args()
    server = start_redis_server()
    try:
        with local_cluster(masters=3) as cluster:
            asyncio.run(measure(cluster, server.url, args))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
