"""The worker's Host on a real 3-master cluster: a follow (consumers restarted on a partition's new master)
and an arq restart's startup running at the same time leave one set of consumers and one follower.

Found by the WAIT fault test: under a failover arq's run restarts (every master answers CLUSTERDOWN for a
while) while the follower restarts the consumers; a startup that came in while the follow was stopping the
old set saw no consumers and started a second set (and a second follower) beside the one the follow then
started, and the worker went quiet afterwards.
"""

from __future__ import annotations

import asyncio
import os

import msgspec
import pytest

from registry.nodes import ClusterRoute, move_first
from registry.partition import tag_slot
from tests.cluster import LocalCluster, three_masters
from tests.partitioned import settings_for
from workers.main import Host

cluster = pytest.fixture(scope="module", name="cluster")(three_masters)


def _running(name: str) -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith(name) and not t.done())


async def test_a_startup_during_a_follow_leaves_one_set_of_consumers(cluster: LocalCluster) -> None:
    settings = msgspec.structs.replace(
        settings_for(f"h{os.urandom(4).hex()}"), redis_url=cluster.url, partitions=16, block_ms=500
    )
    host = Host(settings)
    await host.startup({})
    try:
        route = host.route
        assert isinstance(route, ClusterRoute)
        wanted = route.partitions.count + 1  # a consumer per partition, and the router
        assert _running("jobreg-consumer") == wanted and _running("jobreg-follow") == 1

        # Move partition 0 to another master, as a reshard would; the route learns it.
        keys = route.partitions.keys[0]
        source = cluster.node_of(keys.changes)
        target = next(n for n in cluster.nodes[: cluster.masters] if n.port != source.port)
        await asyncio.to_thread(cluster.migrate_slot, tag_slot(keys.tag), target, first=move_first(keys))
        await route.refresh()

        # The follow stops the old set (up to a blocking read's length) while arq's restart calls startup.
        moved, _ = await asyncio.gather(host.follow(), host.startup({}))
        assert moved
        assert _running("jobreg-consumer") == wanted, "a second set of consumers runs beside the first"
        assert _running("jobreg-follow") == 1
        assert f"{target.port}" in repr(host.consumers[0].redis.connection_pool)
    finally:
        await host.shutdown({})
    assert _running("jobreg-consumer") == 0 and _running("jobreg-follow") == 0
