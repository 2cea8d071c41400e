"""The cluster route (issue 14): the master serving each partition on a Redis Cluster, kept right
through failovers and reshards; ``open_route`` picks it or ``OneNode`` by asking the server.

``JOBREG_REDIS_URL`` names any node. ``open_route(url, partitions)`` sends one ``INFO cluster``: a
standalone server gives ``OneNode`` (every partition on it), a cluster node a ``ClusterRoute``. The
route reads the slot map (``CLUSTER SLOTS``) from any node and keeps one plain asyncio client, one
connection pool, per master (registry/connection.py: the caller's options, and the URL's scheme,
credentials, database and TLS options with each node's address). Every partition's keys share one
hash tag (registry/partition.py), so jobreg's store and query code runs unchanged on that client,
pipelines and EVALSHA included, which redis-py's own cluster client refuses (docs/scaling.md).

How callers use it::

    page = await route.call(i, lambda client: Executor(client, partitions.keys[i], settings).run(plan))

``route.client(i)`` is a list lookup: the client of the master serving partition ``i`` now. Ask
for it at each call and keep nothing built on it across calls, since a failover or a reshard moves
the partition to another client. ``route.call(i, fn)`` runs ``fn(client)`` and, when the answer
says the partition is not (or not yet, or no longer) served there, updates the map and runs ``fn``
again on the partition's client then:

- ``MOVED``: the slot lives elsewhere now (a reshard finished, or a failover the cluster already
  agreed on): the slot is pointed at the node the reply names, and ``fn`` runs again at once.
- a connection error or timeout, ``READONLY`` (the master became a replica), ``CLUSTERDOWN``,
  ``MASTERDOWN``: the master failed or is failing over: the whole map is read again from the first
  node that answers, and ``fn`` runs again after a back-off (20 ms, doubling up to 500 ms).
- ``ASK`` or ``TRYAGAIN``: the slot is being migrated: ``fn`` runs again after the back-off, until
  the migration's ``SETSLOT NODE`` turns the answer into a ``MOVED``. An ``ASK`` is not followed
  with ``ASKING`` on the importing node: jobreg's scripts read keys of their slot that they do not
  declare (a page's records, lua/reply.lua; a sort index's buckets, lua/sortlib.lua), and an
  importing node runs a script as soon as its *declared* keys have arrived, so it could answer from
  a half-moved partition. Waiting keeps every answer exact; the partition pauses while it moves
  (docs/scaling.md, "Operations": the procedure, and what it costs).

Keys outside the partitions (the contract's ``<prefix>:events`` and ``<prefix>:events:dead``,
``{<prefix>}:partitions``, arq's queue) are served the same way by ``route.key_client(key)`` and
``route.call_key(key, fn)``, from the whole slot map.

Any other error (a script's, NOSCRIPT) is the caller's and is raised at once; so is the last
error after ``give_up_s`` (15 s by default). ``fn`` may run more than once, and may have run in
part before a connection broke, so it must be safe to repeat: reads, the apply script's
compare-and-set, events (the fold absorbs a redelivery).

Scripts: the script cache is per node, empty on a promoted replica and on a node a partition just
moved to. Loaders are held per client (``Executor(client, ...)``, ``Projection(client, ...)``), so
a partition on a new client loads its scripts there before its first call; tested on a promoted
replica and after a reshard (tests/faults/test_cluster_route.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from registry.connection import async_client, node_url
from registry.keys import Keys
from registry.partition import Partitions, tag_slot
from registry.route import OneNode, Route
from registry.settings import Settings
from registry.store import partitions

log = logging.getLogger("jobreg.nodes")

T = TypeVar("T")
Address = tuple[str, int]

GIVE_UP_S = 15.0
FIRST_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.5
# One node's answer to CLUSTER SLOTS, at most: a hung node must not hold a refresh for a socket timeout.
MAP_READ_TIMEOUT_S = 1.0

# Error replies about where a slot is served. redis-py's plain client raises them as ResponseError
# with the reply's text, which a pipeline wraps ("Command # 2 (...) of pipeline caused error: ('ASK
# 5723 127.0.0.1:7002',)"), so they are searched for, not matched at the start.
_REDIRECT = re.compile(r"\b(MOVED|ASK) (\d+) ([^\s',)]+:\d+)")
_DOWN = re.compile(r"\b(CLUSTERDOWN|MASTERDOWN)\b")
_MOVING = re.compile(r"\bTRYAGAIN\b")


def move_first(keys: Keys) -> list[str]:
    """The keys of a partition to MIGRATE first when its slot moves (docs/scaling.md, "Operations").

    Every script that reads keys of its slot it does not declare (PAGE and PICK read records, the
    apply script and sort-index readers read buckets) declares the change log or the uuid array;
    once these are gone from the source, it refuses those scripts (ASK/TRYAGAIN) instead of
    running them on a partition half moved. The sequence goes with them (every write declares it).
    """
    return [keys.changes, keys.seq, keys.uuids]


async def cluster_enabled(client: aioredis.Redis) -> bool:
    """Whether ``client``'s server is a Redis Cluster node (one ``INFO cluster``)."""
    try:
        info = await client.info("cluster")
    except ResponseError:  # a server without the section (fakeredis) is standalone
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


async def is_cluster(url: str, **client_options: Any) -> bool:
    """Whether the server ``url`` names is a Redis Cluster node."""
    client = async_client(url, **client_options)
    try:
        return await cluster_enabled(client)
    finally:
        await client.aclose()


async def open_route(url: str, partitions: Partitions, *, give_up_s: float = GIVE_UP_S, **client_options: Any) -> Route:
    """The route to ``partitions``: ``OneNode`` on a standalone server, ``ClusterRoute`` on a cluster
    (whose map is read before returning; P is the caller's, registry/partition.py)."""
    client = async_client(url, **client_options)
    try:
        clustered = await cluster_enabled(client)
    except BaseException:
        await client.aclose()
        raise
    if not clustered:
        return OneNode(client, partitions)
    await client.aclose()
    route = ClusterRoute(url, partitions, give_up_s=give_up_s, **client_options)
    try:
        for i in range(partitions.count):  # reads the map, again while the cluster is still forming
            await route.call(i, _nothing)
    except BaseException:
        await route.aclose()
        raise
    return route


async def connect(settings: Settings, *, stamp: bool = True, **client_options: Any) -> Route:
    """The one way a process connects to its registry: the route to the stored partitions.

    ``JOBREG_REDIS_URL`` names a standalone server or any node of a cluster (asked with one ``INFO
    cluster``). P is read through the client serving ``{<prefix>}:partitions`` (on a cluster, the master
    of its slot) and, with ``stamp``, stamped at a registry's first start (``JOBREG_PARTITIONS``, or the
    default: 1 standalone, 16 on a cluster; a disagreeing setting raises PartitionsMismatch). Tools that
    must not decide P (the CLI's publish, migrate, dead letters) pass ``stamp=False``: the stored P, or 1.
    """
    url, prefix, key = settings.redis_url, settings.prefix, Keys(settings.prefix).partitions

    async def read_p(client: aioredis.Redis, cluster: bool) -> Partitions:
        if stamp:
            return await partitions.load(client, prefix, settings.partitions, cluster=cluster)
        return await partitions.stored(client, prefix)

    client = async_client(url, **client_options)
    try:
        clustered = await cluster_enabled(client)
        if not clustered:
            return OneNode(client, await read_p(client, False))
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    # A first route only to find the stored P's master (the map read once); then the route to the partitions.
    probe = ClusterRoute(url, Partitions(prefix, 1), **client_options)
    try:
        await probe.refresh()
        parts = await probe.call_key(key, lambda c: read_p(c, True))
    finally:
        await probe.aclose()
    return await open_route(url, parts, **client_options)


def outside_client(route: Route, url: str, **client_options: Any) -> aioredis.Redis:
    """A client for the keys outside the partitions (the contract's streams, the counters) for callers that
    send one key, or one slot, per command (health, counters, dead letters): the route's one server, or on a
    cluster redis-py's cluster client, which sends each command to its key's master. Typed as the plain
    client: never give it a pipeline or a script spanning slots. Close it with ``close_outside``."""
    if isinstance(route, ClusterRoute):
        return cast(aioredis.Redis, RedisCluster.from_url(url, **client_options))
    return route.key_client("")


async def close_outside(route: Route, client: aioredis.Redis) -> None:
    """Close ``outside_client``'s client if it is not the route's own."""
    if isinstance(route, ClusterRoute):
        await client.aclose()


def key_url(route: Route, url: str, key: str) -> str:
    """A URL naming the server that serves ``key`` now: ``url`` itself off a cluster (for a client that
    must be built from a URL, such as arq's pool)."""
    if isinstance(route, ClusterRoute):
        return node_url(url, *route.key_address(key))
    return url


def partition_url(route: Route, url: str, i: int) -> str:
    """A URL naming the server that serves partition ``i`` now, as far as the route knows: ``url`` itself off a
    cluster (for a client of its own, such as a change feed's blocking reader)."""
    if isinstance(route, ClusterRoute):
        owner = route.owner(i)
        if owner is None:
            raise RedisConnectionError(f"no master is known for partition {i} yet")
        return node_url(url, *owner)
    return url


async def locate(route: Route, i: int) -> None:
    """Return once partition ``i``'s server answers for it: the route follows a MOVED, a failover (map read
    again, with back-off) or a migration (waits for it) as ``call`` does, so ``partition_url`` names the
    partition's master afterwards. Raises the route's last error after its ``give_up_s``."""
    changes = route.partitions.keys[i].changes
    await route.call(i, lambda client: client.exists(changes))


async def _nothing(client: aioredis.Redis) -> None:
    return None


@dataclass(frozen=True)
class SlotRange:
    """One row of CLUSTER SLOTS: slots first..last, served by ``master``, copied to ``replicas``."""

    first: int
    last: int
    master: Address
    replicas: tuple[Address, ...]


def parse_slots(reply: Sequence[Any], asked: Address) -> list[SlotRange]:
    """CLUSTER SLOTS as ``SlotRange`` rows. An empty host is the node that was ``asked`` (as the
    command documents); a '?' host (an endpoint the cluster does not know) cannot be reached, so
    its rows are left out and those slots keep the master the route knew."""

    def address(node: Sequence[Any]) -> Address | None:
        host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
        return None if host == "?" else ((host or asked[0]), int(node[1]))

    out = []
    for first, last, master, *replicas in reply:
        where = address(master)
        if where is not None:
            known = tuple(a for a in map(address, replicas) if a is not None)
            out.append(SlotRange(int(first), int(last), where, known))
    return out


class ClusterRoute:
    """Each partition's master on a Redis Cluster; ``call`` follows moves and failovers (module docstring)."""

    def __init__(self, url: str, partitions: Partitions, *, give_up_s: float = GIVE_UP_S, **client_options: Any):
        self.url = url
        self.partitions = partitions
        self.give_up_s = give_up_s
        self._options = client_options
        self._slots = [tag_slot(keys.tag) for keys in partitions.keys]
        self._clients: list[aioredis.Redis | None] = [None] * partitions.count
        self._owners: list[Address | None] = [None] * partitions.count
        self._nodes: dict[Address, aioredis.Redis] = {}  # every node talked to, masters or not
        self._known: list[Address] = []  # every node of the last map read, replicas too
        self._ranges: list[SlotRange] = []  # the last map read
        seed = urlsplit(url)
        self._seed: Address = (seed.hostname or "127.0.0.1", seed.port or 6379)
        self._generation = 0  # bumped by every change of the map
        self._refreshing: asyncio.Future[None] | None = None
        self.refreshes = 0  # maps read (tests and the benchmark count them)
        self.retries: Counter[str] = Counter()  # calls run again: after 'moved', 'moving', 'down'

    def client(self, i: int) -> aioredis.Redis:
        """The client of the master serving partition ``i`` now (a list lookup)."""
        client = self._clients[i]
        if client is None:
            raise RedisConnectionError(f"no master is known for partition {i} yet")
        return client

    def owner(self, i: int) -> Address | None:
        """(host, port) of the master serving partition ``i``, as far as the route knows."""
        return self._owners[i]

    def masters(self) -> list[aioredis.Redis]:
        """The clients serving at least one partition, each once (a per-node pipeline or script load each)."""
        return list({id(c): c for c in self._clients if c is not None}.values())

    def key_client(self, key: str) -> aioredis.Redis:
        """The client of the master serving ``key``'s slot: for keys outside the partitions (the
        contract's ``<prefix>:events``, ``{<prefix>}:partitions``, arq's queue)."""
        return self._node(self.key_address(key))

    def key_address(self, key: str) -> Address:
        """(host, port) of the master serving ``key``'s slot, as far as the route knows."""
        slot = key_slot(key.encode())
        master = next((r.master for r in self._ranges if r.first <= slot <= r.last), None)
        if master is None:
            raise RedisConnectionError(f"no master is known for slot {slot} yet")
        return master

    async def call(self, i: int, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``fn(client of partition i)``, run again on the partition's master after a move or a
        failover (module docstring); ``fn`` must be safe to repeat."""
        return await self._run(lambda: self.client(i), fn)

    async def call_key(self, key: str, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """``fn(client of key's master)``, run again as ``call`` does (``fn`` must be safe to repeat)."""
        return await self._run(lambda: self.key_client(key), fn)

    async def _run(self, target: Callable[[], aioredis.Redis], fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        deadline = time.monotonic() + self.give_up_s
        backoff = FIRST_BACKOFF_S
        while True:
            generation = self._generation
            try:
                return await fn(target())
            except (RedisError, OSError) as exc:
                wait = await self._recover(exc, generation)
                if wait is None or time.monotonic() >= deadline:
                    raise
            if wait:
                await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(2 * backoff, MAX_BACKOFF_S)

    async def _recover(self, exc: BaseException, generation: int) -> bool | None:
        """After updating the map if ``exc`` says where the slot is (or that it is moving, or its
        master down): whether to back off before the next try; None if ``exc`` is the caller's own."""
        text = str(exc)
        redirect = _REDIRECT.search(text)
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)) or _DOWN.search(text):
            self.retries["down"] += 1
            await self._refresh_since(generation)
            return True
        if redirect and redirect.group(1) == "MOVED":
            self.retries["moved"] += 1
            host, _, port = redirect.group(3).rpartition(":")
            slot = int(redirect.group(2))
            if slot not in self._slots:  # a key outside the partitions: the whole map read again
                await self._refresh_since(generation)
                return True
            # A MOVED to where the partition already is: the cluster has not settled; wait for it.
            return not self._point(slot, (host.strip("[]"), int(port)))
        if redirect or _MOVING.search(text):
            self.retries["moving"] += 1
            return True
        return None

    def _point(self, slot: int, address: Address) -> bool:
        """Point every partition on ``slot`` at ``address``; whether anything changed."""
        changed = False
        for j, s in enumerate(self._slots):
            if s == slot and self._owners[j] != address:
                self._owners[j], self._clients[j] = address, self._node(address)
                changed = True
        if changed:
            self._generation += 1
        return changed

    def _node(self, address: Address) -> aioredis.Redis:
        client = self._nodes.get(address)
        if client is None:
            client = self._nodes[address] = async_client(node_url(self.url, *address), **self._options)
        return client

    async def follow(self, every_s: float, then: Callable[[], Awaitable[object]] | None = None) -> None:
        """Until cancelled: re-read the slot map every ``every_s`` seconds (at least 1), then run ``then`` (what
        a holder of clients taken from the old map must redo). Callers that ask ``client(i)`` per call need
        nothing more; a round no node answers is logged and left to the next one."""
        while True:
            await asyncio.sleep(max(1.0, every_s))
            try:
                await self.refresh()
                if then is not None:
                    await then()
            except (RedisError, OSError) as exc:
                log.warning("cannot read the cluster's slot map: %s", exc)

    async def refresh(self) -> None:
        """Read the slot map from the first node that answers and point every partition at its master."""
        ranges = self._ranges = await self._read_map()
        self.refreshes += 1
        self._known = list(dict.fromkeys(a for r in ranges for a in (r.master, *r.replicas)))
        for j, slot in enumerate(self._slots):
            master = next((r.master for r in ranges if r.first <= slot <= r.last), None)
            if master is not None and master != self._owners[j]:
                self._owners[j], self._clients[j] = master, self._node(master)
        self._generation += 1

    async def _refresh_since(self, generation: int) -> None:
        """Refresh unless the map changed since ``generation`` (a call that failed on the old map);
        concurrent callers share one refresh. A refresh no node answered is left to the next try."""
        if generation != self._generation:
            return
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh())
        with contextlib.suppress(RedisError, OSError):
            await asyncio.shield(self._refreshing)

    async def _read_map(self) -> list[SlotRange]:
        owners = [a for a in self._owners if a is not None]
        last: BaseException = RedisConnectionError("no cluster node answered CLUSTER SLOTS")
        for address in dict.fromkeys([*owners, *self._known, self._seed]):
            try:
                # The raw reply (redis-py's plain client has no parser for it; parse_slots reads it).
                asked = self._node(address).execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
                reply = await asyncio.wait_for(asked, MAP_READ_TIMEOUT_S)
            except (TimeoutError, RedisError, OSError) as exc:
                last = exc
                continue
            return parse_slots(reply, address)
        raise last

    async def aclose(self) -> None:
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
        for client in self._nodes.values():
            await client.aclose()
        self._nodes.clear()
