"""`registry/nodes.py` `connect(settings)`: the one way a process reaches its registry, on a standalone server
(every partition on it, P = 1 by default) or through any node of a Redis Cluster (each partition's master,
P read or stamped on the master of `{<prefix>}`'s slot)."""

from __future__ import annotations

import os

import msgspec
import pytest
import redis.asyncio as aioredis

from registry.errors import PartitionsMismatch
from registry.keys import Keys
from registry.nodes import ClusterRoute, close_outside, connect, outside_client
from registry.route import OneNode
from registry.settings import Settings, load_settings
from tests.cluster import LocalCluster, three_masters

cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


async def test_on_a_standalone_server_nothing_changes(aredis: aioredis.Redis, settings: Settings) -> None:
    keys = Keys(settings.prefix)
    route = await connect(settings, stamp=False)
    try:
        assert isinstance(route, OneNode) and route.partitions.count == 1
        assert await aredis.get(keys.partitions) is None  # stamp=False stamps nothing
    finally:
        await route.aclose()
    route = await connect(settings)
    try:
        assert isinstance(route, OneNode) and route.partitions.count == 1
        assert route.key_client(keys.ingress) is route.client(0) is outside_client(route, settings.redis_url)
        assert await aredis.get(keys.partitions) == b"1"
    finally:
        await route.aclose()
    with pytest.raises(PartitionsMismatch):
        await connect(msgspec.structs.replace(settings, partitions=4))


async def test_through_any_node_of_a_cluster(cluster: LocalCluster) -> None:
    prefix = f"c{os.urandom(3).hex()}"
    keys = Keys(prefix)
    home = cluster.node_of(keys.partitions)
    other = next(n for n in cluster.nodes if n is not home)
    settings = load_settings({}, redis_url=f"redis://{other.address}/0", prefix=prefix)
    route = await connect(settings)
    try:
        assert isinstance(route, ClusterRoute) and route.partitions.count == 16  # a cluster's default P
        # P lives on its tag's master, reached although the URL names another node.
        with home.client() as c:
            assert c.get(keys.partitions) == b"16"
        assert route.key_client(keys.partitions) is route.key_client(keys.arq_queue)  # arq's keys: one slot
        assert route.key_address(keys.arq_queue)[1] == home.port
        for i, k in enumerate(route.partitions.keys):
            assert route.owner(i) == ("127.0.0.1", cluster.node_of(k.events).port)
        # The keys outside the partitions, one command each to its own master.
        outside = outside_client(route, settings.redis_url)
        try:
            await outside.xadd(keys.ingress, {"a": "1"})
            await outside.xadd(keys.dead, {"a": "1"})
            assert (await outside.xlen(keys.ingress), await outside.xlen(keys.dead)) == (1, 1)
        finally:
            await close_outside(route, outside)
    finally:
        await route.aclose()
    # Read by another process later: the stored P, whatever the default.
    again = await connect(msgspec.structs.replace(settings, redis_url=cluster.url), stamp=False)
    try:
        assert again.partitions.count == 16
    finally:
        await again.aclose()
    with pytest.raises(PartitionsMismatch):
        await connect(msgspec.structs.replace(settings, partitions=8))
