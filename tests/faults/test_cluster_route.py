"""The cluster route under faults, on real clusters: `kill -9` of a master with a replica, and a
partition's slot migrated to another master, both while calls run through the route.

No error may reach the callers (``route.call`` waits, refreshes and runs again), every answer stays
exact, and the scripts load by themselves on a promoted replica and on the node a slot moved to.
How long callers waited is reported (``report``), not asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.nodes import ClusterRoute, move_first, open_route
from registry.partition import Partitions, tag_slot
from registry.query import scripts as query_scripts
from registry.route import Route
from registry.store import record
from tests.cluster import LocalCluster, Node, local_cluster
from tests.faults.conftest import need_redis_server, report
from tests.harness import decode_all
from tests.partitioned import (
    Answer,
    Asker,
    apply,
    apply_all,
    partition_refs,
    reference_answers,
    settings_for,
    workload,
)
from tests.reference import Params

# Client options as a worker or the API would pass them: a dead master must fail a call fast.
OPTIONS = {"socket_timeout": 2.0, "socket_connect_timeout": 0.5}


@pytest.fixture
def cluster_with_replicas() -> Iterator[LocalCluster]:
    need_redis_server()
    with local_cluster(masters=3, replicas=1) as c:
        yield c


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    need_redis_server()
    with local_cluster(masters=3) as c:
        yield c


@dataclass
class Calls:
    """Calls made by the loops: (partition, start, end) of each, and answers that were wrong."""

    done: list[tuple[int, float, float]] = field(default_factory=list)
    wrong: list[tuple[int, Params]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def longest(self, i: int | None = None) -> float:
        return max((end - start for j, start, end in self.done if i is None or j == i), default=0.0)

    def first_after(self, i: int, t: float) -> float:
        """When the first call on partition ``i`` that started after ``t`` ended."""
        return min(end for j, start, end in self.done if j == i and start >= t)


class Tasks:
    """The loops a test started, cancelled when it ends however it ends (a failed test must not leave them running)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, coros: Iterable[Coroutine[Any, Any, None]]) -> list[asyncio.Task[None]]:
        started = [asyncio.create_task(c) for c in coros]
        self.tasks += started
        return started

    async def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


TASKS = Tasks()


async def query_loop(asker: Asker, queries: list[Params], want: list[Answer], calls: Calls) -> None:
    """Ask ``queries`` over and over, checking each answer, until told to stop."""
    while not calls.stop.is_set():
        for q, expected in zip(queries, want, strict=True):
            start = time.monotonic()
            got = await asker.ask(q)
            calls.done.append((asker.i, start, time.monotonic()))
            if got != expected:
                calls.wrong.append((asker.i, q))
            if calls.stop.is_set():
                return


async def loaded(
    route: Route, seed: int, jobs: int, n_queries: int
) -> tuple[list[dict[str, str]], list[Params], list[Asker], list[list[Answer]]]:
    """Load a workload's events through the route; each partition's asker and exact answers."""
    traffic, _, queries = workload(seed, jobs, n_queries)
    await apply_all(route, traffic)
    refs = partition_refs(route, traffic)
    settings = settings_for(route.partitions.prefix)
    askers = [Asker(route, i, settings) for i in range(route.partitions.count)]
    want = [await reference_answers(route, i, refs[i], queries) for i in range(route.partitions.count)]
    for asker, expected in zip(askers, want, strict=True):
        assert [await asker.ask(q) for q in queries] == expected
    return traffic, queries, askers, want


async def script_known(client: aioredis.Redis) -> bool:
    return bool((await client.script_exists(query_scripts.Scripts(client)._scripts["page"].sha))[0])


async def test_a_master_killed_during_calls_fails_over_under_the_route(cluster_with_replicas: LocalCluster) -> None:
    cluster = cluster_with_replicas
    route = await open_route(cluster.url, Partitions(f"f{os.urandom(3).hex()}", 16), **OPTIONS)
    writes = await open_route(cluster.url, Partitions(f"w{os.urandom(3).hex()}", 16), **OPTIONS)
    assert isinstance(route, ClusterRoute) and isinstance(writes, ClusterRoute)
    try:
        _, queries, askers, want = await loaded(route, 61, 480, 8)
        for client in route.masters():  # what the replicas must hold before the kill (asynchronous replication)
            for _ in range(20):  # a replica still in its first sync acknowledges nothing yet
                if await client.execute_command("WAIT", 1, 1000) == 1:  # type: ignore[no-untyped-call]
                    break
            else:
                raise AssertionError("a replica did not catch up")
        victim = cluster.master_of_slot(tag_slot(route.partitions.keys[0].tag))
        affected = [i for i in range(16) if route.owner(i) == ("127.0.0.1", victim.port)]
        [replica] = [n for n in cluster.live() if not cluster.is_master(n) and _replica_of(n, victim)]
        async with aioredis.Redis(port=replica.port) as r:
            assert not await script_known(r)  # the replica never saw the scripts: SCRIPT LOAD is not replicated
        # A writer on the victim's partitions of another registry: which acknowledged jobs a failover loses.
        target = next(j for j in range(16) if writes.owner(j) == ("127.0.0.1", victim.port))
        acked: list[dict[str, str]] = []
        writer_calls, calls = Calls(), Calls()
        loops = [asyncio.create_task(query_loop(a, queries, w, calls)) for a, w in zip(askers, want, strict=True)]
        writer = asyncio.create_task(
            write_loop(writes, target, created_entries(writes, target, 71), acked, writer_calls)
        )
        await asyncio.sleep(0.5)
        killed_at = time.monotonic()
        cluster.kill(victim)
        await asyncio.sleep(0.2)
        while not all(any(s >= killed_at for j, s, _ in calls.done if j == i) for i in affected):
            assert time.monotonic() - killed_at < 30, "the route did not recover within 30 s"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        calls.stop.set()
        writer_calls.stop.set()
        await asyncio.gather(*loops, writer)  # any error a caller saw is raised here
        assert not (wrong := len(calls.wrong)), f"{wrong} wrong answers on {sorted({i for i, _ in calls.wrong})}"
        recovered = max(calls.first_after(i, killed_at) for i in affected) - killed_at
        assert all(route.owner(i) == ("127.0.0.1", replica.port) for i in affected)
        assert route.retries["down"] > 0 and writer_calls.done
        lost = await lost_jobs(writes, target, acked)
        report(
            "cluster_failover",
            affected_partitions=len(affected),
            recovered_s=round(recovered, 2),
            longest_call_s=round(calls.longest(), 2),
            map_reads=route.refreshes,
            writes_longest_call_s=round(writer_calls.longest(), 2),
            acked_jobs=len(acked),
            acked_jobs_lost=lost,
        )
    finally:
        await TASKS.cancel()
        await route.aclose()
        await writes.aclose()


def _replica_of(node: Node, master: Node) -> bool:
    with node.client() as c:
        role = c.execute_command("ROLE")
        return bool(role[0] == b"slave" and int(role[2]) == master.port)


def created_entries(route: Route, i: int, seed: int) -> list[dict[str, str]]:
    """`created` events of new jobs of partition ``i`` (raw entries)."""
    traffic, _, _ = workload(seed, 3000, 0)
    return [e for e in decoded_only(traffic) if e["type"] == "created" and route.partitions.of(e["job_id"]) == i]


def decoded_only(traffic: list[dict[str, str]]) -> list[dict[str, str]]:
    """The entries jobreg decodes (make_traffic mixes in broken ones)."""
    return [e for e in traffic if decode_all([e])]


async def write_loop(
    route: Route, i: int, entries: list[dict[str, str]], acked: list[dict[str, str]], calls: Calls
) -> None:
    """Apply ``entries`` (of partition ``i``), a few per call, recording those whose apply returned."""
    for start in range(0, len(entries), 5):
        if calls.stop.is_set():
            return
        batch = entries[start : start + 5]
        began = time.monotonic()
        await apply(route, i, decode_all(batch))
        calls.done.append((i, began, time.monotonic()))
        acked += batch
        await asyncio.sleep(0.02)  # spread over the failover or migration


async def lost_jobs(route: Route, i: int, acked: list[dict[str, str]]) -> int:
    keys: Keys = route.partitions.keys[i]
    ids = [e["job_id"].lower() for e in acked]
    handles = await route.call(i, lambda client: record.handles(client, keys, ids))
    return sum(1 for h in handles if not h)


async def test_partitions_moved_to_another_master_during_calls(cluster: LocalCluster) -> None:
    """First a partition moved while every partition is queried; then another one moved while it
    is written to and the others are queried. Nothing fails, every answer is exact."""
    route = await open_route(cluster.url, Partitions(f"m{os.urandom(3).hex()}", 16), **OPTIONS)
    assert isinstance(route, ClusterRoute)
    try:
        traffic, queries, askers, want = await loaded(route, 67, 640, 8)
        first, second = 5, 6
        target = next(
            n for n in cluster.nodes if ("127.0.0.1", n.port) not in (route.owner(first), route.owner(second))
        )
        async with aioredis.Redis(port=target.port) as t:
            await t.script_flush()  # the target has never seen a script: it must load them on the first call
        calls = Calls()
        loops = TASKS.start(query_loop(a, queries, w, calls) for a, w in zip(askers, want, strict=True))
        first_move = await move(cluster, route, first, target)
        calls.stop.set()
        await asyncio.gather(*loops)
        assert not (wrong := len(calls.wrong)), f"{wrong} wrong answers on {sorted({i for i, _ in calls.wrong})}"
        assert route.owner(first) == ("127.0.0.1", target.port)
        assert route.retries["moving"] > 0 and route.retries["moved"] > 0  # calls did meet the migration
        longest_first = calls.longest(first)

        # The second partition moves while it is written to; the others are queried meanwhile.
        calls, writer_calls, acked = Calls(), Calls(), []
        others = [i for i in range(16) if i != second]
        loops = TASKS.start(query_loop(askers[i], queries, want[i], calls) for i in others)
        [writer] = TASKS.start([write_loop(route, second, created_entries(route, second, 73), acked, writer_calls)])
        await asyncio.sleep(0.3)
        second_move = await move(cluster, route, second, target)
        await asyncio.sleep(0.3)
        calls.stop.set()
        writer_calls.stop.set()
        await asyncio.gather(*loops, writer)
        assert not (wrong := len(calls.wrong)), f"{wrong} wrong answers on {sorted({i for i, _ in calls.wrong})}"
        assert any(start < second_move[1] and end > second_move[0] for _, start, end in writer_calls.done)
        refs = partition_refs(route, [*traffic, *acked])
        assert [await askers[second].ask(q) for q in queries] == await reference_answers(
            route, second, refs[second], queries
        )
        assert await lost_jobs(route, second, acked) == 0
        report(
            "cluster_reshard",
            keys_moved=first_move[2],
            migration_s=round(first_move[1] - first_move[0], 2),
            longest_call_moving_s=round(longest_first, 2),
            longest_call_others_s=round(max(calls.longest(i) for i in others), 2),
            writes_during_move=len(acked),
            longest_write_s=round(writer_calls.longest(), 2),
            retries=dict(route.retries),
        )
    finally:
        await TASKS.cancel()
        await route.aclose()


async def move(cluster: LocalCluster, route: ClusterRoute, i: int, target: Node) -> tuple[float, float, int]:
    """Migrate partition ``i``'s slot to ``target`` (in a thread, calls keep running): (began, ended, keys moved).

    The keys that every script reading undeclared keys declares go first: from then on the source
    refuses those scripts (docs/scaling.md, "Moving a partition"). Batches of 10 keys with a pause
    between them keep the migration open long enough for calls to meet it.
    """
    keys = route.partitions.keys[i]
    await asyncio.sleep(0.3)
    began = time.monotonic()
    moved = await asyncio.to_thread(
        cluster.migrate_slot,
        tag_slot(keys.tag),
        target,
        first=move_first(keys),
        batch=10,
        pause_s=0.03,
    )
    ended = time.monotonic()
    await asyncio.sleep(0.3)
    return began, ended, moved
