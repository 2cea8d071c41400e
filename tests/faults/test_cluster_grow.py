"""Growing a cluster registry from 3 to 6 masters while ingest and queries run (issue 14): three empty
masters join (``redis-cli --cluster add-node``) and ``jobreg cluster rebalance``'s code moves whole
partition slots to them one at a time (registry/ops/rebalance.py). Meanwhile jobs are written through
the apply path on some partitions, a backend XADDs to every partition stream, and every other partition
is queried in a loop. Nothing fails, every answer is exact, nothing written is lost, and the masters end
within one partition of each other."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from registry.keys import Keys
from registry.nodes import ClusterRoute, open_route
from registry.ops import rebalance
from registry.partition import Partitions, tag_slot
from registry.wire.publisher import Publisher
from tests.cluster import LocalCluster, add_masters, local_cluster
from tests.faults.conftest import need_redis_server, report
from tests.faults.test_cluster_route import TASKS, Calls, created_entries, loaded, lost_jobs, query_loop, write_loop
from tests.faults.test_cluster_wait import _missing, _start, _wait_until
from tests.harness import jobreg
from tests.partitioned import partition_refs, reference_answers
from tests.reference import make_traffic

pytestmark = pytest.mark.slow

OPTIONS = {"socket_timeout": 2.0, "socket_connect_timeout": 0.5}
WRITTEN = (0, 1, 2, 3)  # partitions that take new jobs during the growth; the others are queried


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    need_redis_server()
    with local_cluster(masters=3) as c:
        yield c


async def test_growing_from_three_to_six_masters_while_ingest_and_queries_run(cluster: LocalCluster) -> None:
    prefix = f"g{os.urandom(3).hex()}"
    parts = Partitions(prefix, 16)
    route = await open_route(cluster.url, parts, **OPTIONS)
    outside = redis.RedisCluster.from_url(cluster.url, **OPTIONS)  # type: ignore[arg-type]
    assert isinstance(route, ClusterRoute)
    try:
        traffic, queries, askers, want = await loaded(route, 81, 480, 6)
        outside.set(Keys(prefix).partitions, 16)  # the stored P, as a worker stamps it at its first start
        queried = [i for i in range(16) if i not in WRITTEN]
        calls, writer_calls = Calls(), Calls()
        acked: dict[int, list[dict[str, str]]] = {i: [] for i in WRITTEN}
        loops = TASKS.start(query_loop(askers[i], queries, want[i], calls) for i in queried)
        loops += TASKS.start(
            write_loop(route, i, created_entries(route, i, 90 + i), acked[i], writer_calls) for i in WRITTEN
        )
        backend = Publisher(outside, partitions=parts)  # type: ignore[arg-type]
        published = _start(backend, make_traffic(random.Random(83), 600, bad_rate=0.0), batch=10, pause_s=0.02)

        new = await asyncio.to_thread(add_masters, cluster, 3)
        nodes = rebalance.Cluster(cluster.url, **OPTIONS)
        done: list[rebalance.Done] = []
        try:
            moves = await asyncio.to_thread(rebalance.rebalance, nodes, parts, batch=20, on_done=done.append)
        finally:
            nodes.close()
        await asyncio.sleep(0.3)
        calls.stop.set()
        writer_calls.stop.set()
        await asyncio.gather(*loops)  # any error a caller saw is raised here
        await asyncio.to_thread(_wait_until, published.done.is_set, 120, "the backend's events published")

        assert not (wrong := len(calls.wrong)), f"{wrong} wrong answers on {sorted({i for i, _ in calls.wrong})}"
        masters = Counter(cluster.master_of_slot(tag_slot(k.tag)).port for k in parts.keys)
        assert len(masters) == 6 and max(masters.values()) - min(masters.values()) <= 1, masters
        assert {n.port for n in new} <= set(masters)
        assert len(moves) == len(done) >= 6
        moved = {i for m in moves for i in m.partitions}
        assert moved & set(queried) and moved & set(WRITTEN)  # both kinds of partition met a move
        assert not published.other and _missing(cluster, published.acked) == 0
        await route.refresh()
        refs = partition_refs(route, [*traffic, *(e for i in WRITTEN for e in acked[i])])
        for i in WRITTEN:
            assert acked[i] and await lost_jobs(route, i, acked[i]) == 0
            assert [await askers[i].ask(q) for q in queries] == await reference_answers(route, i, refs[i], queries)
        env = {**os.environ, "JOBREG_REDIS_URL": cluster.url, "JOBREG_PREFIX": prefix}
        again = jobreg("cluster", "rebalance", "--dry-run", env=env)
        assert again.returncode == 0 and "nothing to move" in again.stdout, again.stderr
        moving = {i: calls.longest(i) for i in queried if i in moved}
        report(
            "cluster grow 3 -> 6 masters",
            moves=len(moves),
            keys_per_move=[d.keys for d in done],
            seconds_per_move=[round(d.seconds, 2) for d in done],
            longest_call_moving_s=round(max(moving.values(), default=0.0), 2),
            longest_call_staying_s=round(max(calls.longest(i) for i in queried if i not in moved), 2),
            longest_write_s=round(writer_calls.longest(), 2),
            writes=sum(len(a) for a in acked.values()),
            published=len(published.acked),
            retries=dict(route.retries),
        )
    finally:
        await TASKS.cancel()
        await route.aclose()
        outside.close()
