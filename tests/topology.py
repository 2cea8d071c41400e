"""The two topologies the suites run on (issue 14): a private standalone redis-server, and the session's local
3-master Redis Cluster (tests/cluster.py). A test module opts in with ``pytestmark = both_topologies``: every
test of it then runs once per topology through the ``store`` fixture (tests/conftest.py), and its ``settings``
name the store's URL under a fresh prefix. A test that inspects one standalone server's internals is marked
``standalone_only("why")`` (its cluster run is skipped with that reason; tests/README.md lists them).

The helpers here take a URL and work on either topology, so harness code does not carry the topology around:
``sync_client(url)`` gives redis-py's cluster client on a cluster node (each single-key command goes to its
key's master; pipelines without transactions are split by node), the plain client elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis
import redis.asyncio as aioredis

from registry.domain.model import Event
from registry.keys import Keys
from registry.live.changes import ORIGIN, Position, parse_position
from registry.live.merged import SEPARATOR, format_vector
from registry.nodes import connect
from registry.partition import Partitions
from registry.route import Route
from registry.settings import load_settings
from registry.store import record
from registry.store.projection import Projection

if TYPE_CHECKING:
    from tests.cluster import LocalCluster
    from tests.conftest import RedisServer

STANDALONE, CLUSTER = "standalone", "cluster"
TOPOLOGIES = (STANDALONE, CLUSTER)

# A module's tests run on both topologies: the `store` fixture, parametrized, is requested by each.
both_topologies = pytest.mark.usefixtures("store")


def standalone_only(reason: str) -> pytest.MarkDecorator:
    """This test (or module) runs on the standalone topology only, for ``reason`` (one line)."""
    return pytest.mark.standalone_only(reason)


@dataclass
class Store:
    """The Redis a test's registry lives on: ``url`` names the standalone server or one node of the cluster
    (jobreg's processes and ``connect`` find the rest)."""

    topology: str
    url: str
    server: RedisServer | None = None
    cluster: LocalCluster | None = None

    @property
    def is_cluster(self) -> bool:
        return self.topology == CLUSTER

    @property
    def port(self) -> int:
        if self.server is not None:
            return self.server.port
        assert self.cluster is not None
        return self.cluster.nodes[0].port

    def client(self) -> redis.Redis:
        return sync_client(self.url)


@functools.cache
def _clustered(url: str) -> bool:
    with redis.Redis.from_url(url) as probe:
        try:
            info = probe.info("cluster")
        except redis.ResponseError:  # fakeredis has no cluster section: standalone
            return False
    return str(info.get("cluster_enabled", "0")) == "1"


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster node (asked once per URL: a test server's kind never changes)."""
    return _clustered(url)


def sync_client(url: str) -> redis.Redis:
    """A blocking client for the keys of a registry on ``url``: redis-py's cluster client on a cluster (typed
    as the plain one: single-key commands and non-transactional pipelines only), the plain client elsewhere."""
    if is_cluster_url(url):
        return cast(redis.Redis, redis.RedisCluster.from_url(url))
    return redis.Redis.from_url(url)


def async_client(url: str) -> aioredis.Redis:
    """``sync_client``'s asyncio twin (no pipelines on a cluster: the route's clients serve those)."""
    if is_cluster_url(url):
        return cast(aioredis.Redis, aioredis.RedisCluster.from_url(url))
    return aioredis.Redis.from_url(url)


async def open_registry(url: str, prefix: str, partitions: int = 0) -> Route:
    """The route to a registry under ``prefix`` on ``url``, stamping P as a worker's first start would
    (``partitions``, or the topology's default: 1 standalone, 16 on a cluster)."""
    return await connect(load_settings({}, redis_url=url, prefix=prefix, partitions=partitions))


async def apply_events(route: Route, events: Sequence[Event], *, slice_size: int = 97, **options: Any) -> None:
    """Apply ``events`` with the real projection, each to its job's partition, in slices as a stream would
    deliver them (``options``: Projection's, e.g. ``set_to_bitmap_threshold``)."""
    parts = route.partitions
    for start in range(0, len(events), slice_size):
        routed: dict[int, list[Event]] = {}
        for e in events[start : start + slice_size]:
            routed.setdefault(parts.of(e.job_id), []).append(e)
        for i, batch in routed.items():
            await route.call(i, lambda c, i=i, batch=batch: Projection(c, parts.keys[i], **options).apply(batch))  # type: ignore[misc]


async def creation_orders(route: Route, job_ids: Sequence[str]) -> dict[str, int]:
    """Every listed job's creation_order (handle * P + i), read from its partition."""
    parts, orders = route.partitions, {}
    for i, keys in enumerate(parts.keys):
        mine = [j for j in job_ids if parts.of(j) == i]
        if mine:
            handles = await route.call(i, lambda c, keys=keys, mine=mine: record.handles(c, keys, mine))  # type: ignore[misc]
            orders.update({j: h * parts.count + i for j, h in zip(mine, handles, strict=True) if h})
    return orders


async def load_events(url: str, prefix: str, events: Sequence[Event], **options: Any) -> dict[str, int]:
    """A registry under ``prefix`` on ``url`` (P stamped) holding ``events``; every listed job's creation_order."""
    route = await open_registry(url, prefix)
    try:
        await apply_events(route, events, **options)
        return await creation_orders(route, sorted({e.job_id for e in events}))
    finally:
        await route.aclose()


def stored_partitions(url: str, prefix: str) -> Partitions:
    """The registry's stored P (1 before any is stamped), read through ``url``'s topology."""
    with sync_client(url) as client:
        raw = client.get(Keys(prefix).partitions)
    return Partitions(prefix, int(raw) if raw else 1)


def origin_position(url: str, prefix: str) -> str:
    """A watch's resume id before any change: ORIGIN on one partition, the vector of P ORIGINs on several
    (a single position is refused by a partitioned registry's API: 422 naming resource_version)."""
    return format_vector([ORIGIN] * stored_partitions(url, prefix).count)


def watch_position(url: str, prefix: str) -> str:
    """Where a watch of the registry stands now: the latest change's position on one partition, the vector of
    every partition's on several (the id a watch's latest event carries; ORIGIN's before any change)."""
    with sync_client(url) as client:
        last = [client.xrevrange(keys.changes, count=1) for keys in stored_partitions(url, prefix).keys]
    return format_vector([_positions(rows[0][0].decode())[0] if rows else ORIGIN for rows in last])  # type: ignore[index]


__all__ = ["ORIGIN", "TOPOLOGIES", "Store", "both_topologies", "standalone_only"]


def _positions(text: str) -> list[Position] | None:
    parts = [parse_position(p) for p in text.split(SEPARATOR)]
    return None if any(p is None for p in parts) else [p for p in parts if p is not None]


def position_reached(current: str | None, target: str) -> bool:
    """Whether a watch at ``current`` has delivered everything up to ``target`` (positions or vectors of
    them: every partition's component at least the target's)."""
    want, got = _positions(target), _positions(current or "")
    assert want is not None, f"not a position: {target!r}"
    return got is not None and len(got) == len(want) and all(g >= w for g, w in zip(got, want, strict=True))


def per_partition(ids: Sequence[str], start: str) -> list[list[Position]]:
    """The changes a watch delivered, by partition, from the ids of its events after ``start``: each id is the
    vector of positions delivered so far, so each event moves exactly one component (its partition's)."""
    before = _positions(start)
    assert before is not None, f"not a position: {start!r}"
    out: list[list[Position]] = [[] for _ in before]
    for event_id in ids:
        now = _positions(event_id)
        assert now is not None and len(now) == len(before), event_id
        moved = [i for i, (a, b) in enumerate(zip(before, now, strict=True)) if a != b]
        assert len(moved) == 1, f"{event_id} moves {len(moved)} partitions after the previous event"
        out[moved[0]].append(now[moved[0]])
        before = now
    return out


def change_logs(url: str, prefix: str) -> list[list[Position]]:
    """Every partition's change log, as positions in log order."""
    with sync_client(url) as client:
        logs = [client.xrange(keys.changes) for keys in stored_partitions(url, prefix).keys]
    return [[_positions(entry_id.decode())[0] for entry_id, _ in rows] for rows in logs]  # type: ignore[index]


def changes_after(url: str, prefix: str, start: str) -> list[list[Position]]:
    """Every partition's logged changes after ``start`` (a watch position or vector), by partition."""
    after = _positions(start)
    assert after is not None, f"not a position: {start!r}"
    return [[p for p in log if p > a] for log, a in zip(change_logs(url, prefix), after, strict=True)]


def commands_processed(client: redis.Redis) -> int:
    """Commands the store has processed so far (summed over every node of a cluster)."""
    if isinstance(client, redis.RedisCluster):
        per_node = client.info("stats", target_nodes=redis.RedisCluster.ALL_NODES)
        return sum(int(info["total_commands_processed"]) for info in per_node.values())
    return int(client.info("stats")["total_commands_processed"])
