"""The cluster route (registry/nodes.py) on a real 3-master cluster: discovery, routing, MOVED, and
the per-partition store and query engine run through it, against a standalone P = 16 registry."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import NoScriptError, ResponseError

from registry.nodes import ClusterRoute, SlotRange, is_cluster, open_route
from registry.partition import Partitions, tag_slot
from registry.route import OneNode, Route
from tests.cluster import LocalCluster, local_cluster
from tests.conftest import RedisServer
from tests.partitioned import Asker, apply_all, partition_refs, reference_answers, settings_for, workload

COUNTER = "#!lua\n-- KEYS[1] a counter. Returns it incremented.\nreturn redis.call('INCR', KEYS[1])\n"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    if shutil.which("redis-server") is None and not os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
        pytest.skip("a local Redis Cluster needs redis-server and redis-cli")
    with local_cluster(masters=3) as c:
        yield c


@pytest.fixture
async def route(cluster: LocalCluster) -> AsyncIterator[ClusterRoute]:
    opened = await open_route(cluster.url, Partitions(f"t{os.urandom(4).hex()}", 16))
    assert isinstance(opened, ClusterRoute)
    yield opened
    await opened.aclose()


async def test_open_route_detects_the_topology(cluster: LocalCluster, redis_server: RedisServer) -> None:
    partitions = Partitions("t", 16)
    for url in (cluster.url, f"redis://{cluster.nodes[-1].address}/0"):  # any node will do
        assert await is_cluster(url)
        route = await open_route(url, partitions)
        assert isinstance(route, ClusterRoute) and route.refreshes == 1
        await route.aclose()
    assert not await is_cluster(redis_server.url)  # a real server, or fakeredis without the section
    standalone = await open_route(redis_server.url, partitions)
    assert isinstance(standalone, OneNode)
    assert await standalone.call(3, lambda c: c.ping())
    await standalone.aclose()


async def test_every_partition_is_served_by_the_master_of_its_slot(cluster: LocalCluster, route: ClusterRoute) -> None:
    keys = route.partitions.keys
    owners = [route.owner(i) for i in range(16)]
    for i in range(16):
        owner = cluster.master_of_slot(tag_slot(keys[i].tag))
        assert owners[i] == ("127.0.0.1", owner.port)
        # A `#!lua` script on the partition's keys runs on its client...
        assert await route.client(i).eval(COUNTER, 1, keys[i].seq) == 1  # type: ignore[misc]
        # ...and a key of a partition on another master is MOVED there.
        other = next(j for j in range(16) if owners[j] != owners[i])
        with pytest.raises(ResponseError, match=f"^MOVED {tag_slot(keys[other].tag)} "):
            await route.client(i).eval(COUNTER, 1, keys[other].seq)  # type: ignore[misc]
    # One client (pool) per master; 16 partitions spread 5/6/5 over 3 masters.
    assert len(route.masters()) == 3
    assert sorted(Counter(owners).values()) == [5, 5, 6]


async def test_a_call_sent_to_the_wrong_master_follows_the_move(route: ClusterRoute) -> None:
    keys = route.partitions.keys
    right = route.owner(0)
    wrong = next(route.owner(i) for i in range(16) if route.owner(i) != right)
    assert right is not None and wrong is not None
    route._point(tag_slot(keys[0].tag), wrong)  # a stale map, as after a reshard elsewhere
    assert route.owner(0) == wrong
    assert await route.call(0, lambda c: c.eval(COUNTER, 1, keys[0].seq)) == 1  # type: ignore[arg-type, return-value]
    assert route.owner(0) == right and route.refreshes == 1  # MOVED named the master: no map read


async def test_the_callers_own_errors_are_raised_at_once(route: ClusterRoute) -> None:
    calls = 0

    async def broken(client: aioredis.Redis) -> None:
        nonlocal calls
        calls += 1
        await client.evalsha("0" * 40, 1, route.partitions.keys[1].seq)

    with pytest.raises(NoScriptError):
        await route.call(1, broken)
    with pytest.raises(ResponseError, match="unknown command"):
        await route.call(1, lambda c: c.execute_command("NOSUCHCOMMAND"))  # type: ignore[no-untyped-call]
    assert calls == 1


async def test_partitioned_store_and_queries_answer_alike_on_a_cluster_and_one_server(
    route: ClusterRoute, redis_server: RedisServer
) -> None:
    """The same random events, each applied to its job's partition, into the 3-master cluster and
    into one server holding the same 16 partitions: every partition answers a random query
    workload identically on both, and as the reference fold of its events."""
    if redis_server.process is None:
        pytest.skip("the standalone side needs a real redis-server")
    traffic, _, queries = workload(41, 480, 40)
    standalone: Route = OneNode(aioredis.Redis.from_url(redis_server.url), route.partitions)
    settings = settings_for(route.partitions.prefix)
    try:
        await apply_all(route, traffic)
        await apply_all(standalone, traffic)
        refs = partition_refs(route, traffic)
        assert all(ref.jobs() for ref in refs)  # every partition has jobs
        for i in range(route.partitions.count):
            on_cluster, on_one = Asker(route, i, settings), Asker(standalone, i, settings)
            got = [await on_cluster.ask(q) for q in queries]
            assert got == [await on_one.ask(q) for q in queries], i
            assert got == await reference_answers(route, i, refs[i], queries), i
        # Each partition's keys are on its own master only.
        for i, keys in enumerate(route.partitions.keys):
            assert await route.client(i).exists(keys.seq, keys.uuids, keys.changes) == 3
    finally:
        await standalone.aclose()


async def test_an_executor_reloads_its_scripts_on_a_node_that_lost_them(route: ClusterRoute) -> None:
    """A node restarted at the same address (or SCRIPT FLUSH) keeps its client, so the Executor held
    for it has loaded its scripts before: its pipelined EVALSHAs must load them again by themselves."""
    traffic, _, queries = workload(43, 300, 60)
    await apply_all(route, traffic)
    asker = Asker(route, 2, settings_for(route.partitions.prefix))
    want = [await asker.ask(q) for q in queries]
    await route.client(2).script_flush()
    assert [await asker.ask(q) for q in queries] == want
    assert len(asker.executors) == 1  # the same Executor, scripts loaded again


async def test_a_key_outside_the_partitions_is_served_by_its_master(cluster: LocalCluster, route: ClusterRoute) -> None:
    events = f"{route.partitions.prefix}:events"  # the contract's ingress stream: a slot of its own
    owner = cluster.master_of_slot(key_slot(events.encode()))
    assert route.key_client(events) is route._node(("127.0.0.1", owner.port))
    entry = await route.call_key(events, lambda c: c.xadd(events, {"a": "1"}))
    assert await route.call_key(events, lambda c: c.xlen(events)) == 1 and entry
    # A stale map (the slot's range pointed at another master): the MOVED makes the route read it again.
    wrong = next(n for n in cluster.nodes if n is not owner)
    route._ranges = [SlotRange(0, 16383, ("127.0.0.1", wrong.port), ())]
    before = route.refreshes
    assert await route.call_key(events, lambda c: c.xlen(events)) == 1
    assert route.refreshes == before + 1 and route.key_client(events) is route._node(("127.0.0.1", owner.port))
