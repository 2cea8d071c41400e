"""Which Redis client serves each partition (issue 14): the one server of a standalone Redis, or on a
Redis Cluster the master that holds the partition's slot.

Every partition's keys share one hash tag (registry/partition.py), so every script call and pipeline
of one partition goes to one node through a plain client: jobreg's store and query code runs unchanged
on it (redis-py's cluster client refuses EVALSHA in pipelines; see docs/scaling.md). Code that works
per partition asks the route for partition ``i``'s client each time instead of keeping one, so a
cluster route can move a partition to another node (failover, reshard) behind it, or lets the route
run the call (``route.call(i, fn)``), which on a cluster runs it again where the partition went.
``registry/nodes.py`` has the cluster route and ``open_route``, which picks one of the two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis

from registry.keys import Keys
from registry.partition import Partitions

T = TypeVar("T")


class Route(Protocol):
    """The partitions of a registry and, for each, the client that serves it now."""

    @property
    def partitions(self) -> Partitions: ...

    def client(self, i: int) -> aioredis.Redis:
        """The client serving partition ``i`` (0 .. partitions.count - 1)."""
        ...

    async def call(self, i: int, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``fn(client(i))``; on a cluster, run again on the partition's master when it moved or
        failed over (registry/nodes.py), so ``fn`` must be safe to repeat."""
        ...

    def key_client(self, key: str) -> aioredis.Redis:
        """The client serving ``key``, a key outside the partitions (the contract's streams, the stored P,
        the page-token key, arq's queue): on a cluster the master of its slot."""
        ...

    async def call_key(self, key: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``fn(key_client(key))``, run again as ``call`` does on a cluster."""
        ...

    async def aclose(self) -> None: ...


@dataclass
class OneNode:
    """Every partition on one server (a standalone Redis; P is 1 unless a test asks for more)."""

    redis: aioredis.Redis
    partitions: Partitions

    def client(self, i: int) -> aioredis.Redis:
        return self.redis

    async def call(self, i: int, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await fn(self.redis)

    def key_client(self, key: str) -> aioredis.Redis:
        return self.redis

    async def call_key(self, key: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await fn(self.redis)

    async def aclose(self) -> None:
        await self.redis.aclose()


def each(route: Route) -> list[tuple[aioredis.Redis, Keys]]:
    """(client, keys) of every partition, in partition order: what a scatter runs one call on each of."""
    return [(route.client(i), keys) for i, keys in enumerate(route.partitions.keys)]


class Caller(Protocol):
    """Runs ``fn`` on the client serving one thing (a partition, a key) at the time of the call."""

    async def __call__(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T: ...


@dataclass(frozen=True)
class Direct:
    """Every call on one client (a standalone server, or a test's)."""

    redis: aioredis.Redis

    async def __call__(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await fn(self.redis)


@dataclass(frozen=True)
class OnPartition:
    """Every call on partition ``i``'s server now, through the route: on a cluster, a holder of this (a watch's
    catch-up reads) follows the partition through a failover or a reshard, where a client kept from the
    start would stay on the old master."""

    route: Route
    i: int

    async def __call__(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await self.route.call(self.i, fn)


@dataclass(frozen=True)
class OnKey:
    """Every call on ``key``'s server now, through the route (the layout and page-token keys: the prefix's tag)."""

    route: Route
    key: str

    async def __call__(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        return await self.route.call_key(self.key, fn)


def as_caller(target: aioredis.Redis | Caller) -> Caller:
    """``target`` as a Caller: a client is called directly."""
    return Direct(target) if isinstance(target, aioredis.Redis) else target
