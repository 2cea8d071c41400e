"""The partitioned write side on a real 3-master Redis Cluster (issue 14): every call one slot, each
partition's through a plain client of the master serving it, global keys through their own masters."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.partition import Partitions
from registry.settings import Settings, load_settings
from registry.store import partitions as stored_partitions
from registry.wire.deadletter import list_dead
from tests.cluster import LocalCluster, three_masters
from tests.harness import assert_partitions_match
from tests.reference import Reference, make_traffic
from workers.consumer import Consumer
from workers.router import Router

P = 4


cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


@dataclass
class SlotRoute:
    """A minimal test route: partition i's client is a plain client of the master serving its tag's slot."""

    partitions: Partitions
    clients: list[aioredis.Redis]

    def client(self, i: int) -> aioredis.Redis:
        return self.clients[i]

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def nodes(cluster: LocalCluster) -> AsyncIterator[dict[int, aioredis.Redis]]:
    clients = {n.port: aioredis.Redis(port=n.port) for n in cluster.nodes}
    yield clients
    for client in clients.values():
        await client.aclose()


async def drain(consumer: Consumer) -> None:
    while True:
        fresh = consumer._backlog_from is None
        if not await consumer.step() and fresh:
            return


async def test_router_and_partition_consumers_on_a_cluster(
    cluster: LocalCluster, nodes: dict[int, aioredis.Redis]
) -> None:
    def on(key: str) -> aioredis.Redis:
        return nodes[cluster.node_of(key).port]

    settings: Settings = msgspec.structs.replace(
        load_settings({}, prefix=f"c{os.urandom(3).hex()}"), batch_size=100_000, block_ms=10, partitions=P
    )
    keys = Keys(settings.prefix)
    parts = await stored_partitions.load(on(keys.partitions), settings.prefix, P, cluster=True)
    route = SlotRoute(parts, [on(k.events) for k in parts.keys])
    assert len({id(route.client(i)) for i in range(P)}) > 1  # the partitions do span masters
    traffic = make_traffic(random.Random(17), 200)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    ingress, dead = on(keys.ingress), on(keys.dead)
    pipe = ingress.pipeline(transaction=False)
    for entry in traffic:
        pipe.xadd(keys.ingress, entry)  # type: ignore[arg-type]
    await pipe.execute()

    router = Router(ingress, settings, route, dead=dead)
    await drain(router)
    for i, k in enumerate(parts.keys):
        await drain(Consumer(route.client(i), settings, k, dead=dead))

    assert await assert_partitions_match(route.client(0), parts, ref, route) == len(ref.jobs())
    assert len(await list_dead(dead, keys, count=10_000)) == ref.invalid > 0
    assert router.routed == len(traffic) - ref.invalid
    assert (await ingress.xpending(keys.ingress, settings.group))["pending"] == 0
    assert int((await ingress.hgetall(keys.ingress_metrics))[b"dead_lettered:invalid"]) == ref.invalid
