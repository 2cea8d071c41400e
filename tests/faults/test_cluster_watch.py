"""A watch of a `jobreg api` process on a Redis Cluster rides out a master's failover and a partition's move (issue 14).

3 masters with a replica each, P = 16, `jobreg worker` and `jobreg api` as real processes. One watch stays
open throughout; `kill -9` of the master serving `{<prefix>}` (five partitions, the page-token key) and,
later, a partition's slot migrated to another master while events flow. The open watch must receive every
change logged after it opened, each once, in each partition's log order; watches resumed (Last-Event-ID)
from a position taken before the failover, and before the move, must receive exactly the changes logged
after it; every job must end in the reference's state. Before the feeds followed the route, the failed
master's partitions went silent until the API restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from registry.keys import Keys
from registry.live.changes import Position, parse_position
from registry.live.merged import parse_vector
from registry.nodes import move_first
from registry.partition import Partitions, tag_slot
from registry.store.partitions import CLUSTER_DEFAULT
from tests.cluster import LocalCluster, Node, local_cluster
from tests.conftest import free_port
from tests.harness import healthy, spawn, stop, wait_for
from tests.reference import Reference, make_traffic, render_watched
from tests.sse import SseStream, open_stream

pytestmark = pytest.mark.slow

P = CLUSTER_DEFAULT
WATCH = "/api/v2/jobs/watch"
CAUGHT_UP_S = 60.0

Change = tuple[int, Position]  # (partition, position in its change log)


class Watcher:
    """One open watch read in the background: every change as (partition, position), and each job's last state."""

    def __init__(self, client: httpx.AsyncClient, partitions: Partitions) -> None:
        self.client = client
        self.partitions = partitions
        self.changes: list[Change] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.last_id = ""
        self.ended: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._resp: httpx.Response | None = None

    async def open(self, last_event_id: str | None = None) -> None:
        resp, stream = await open_stream(self.client, WATCH, last_event_id=last_event_id)
        assert resp.status_code == 200, await resp.aread()
        self._resp = resp
        messages = stream.messages(resp)
        await messages.__anext__()  # the opening block: the stream's position
        self.last_id = stream.last_event_id
        self._task = asyncio.create_task(self._read(stream, messages))

    async def _read(self, stream: SseStream, messages: Any) -> None:
        try:
            async for msg in messages:
                self.last_id = stream.last_event_id
                if msg.event in ("", "message"):
                    continue
                if msg.event not in ("added", "modified"):
                    self.ended = f"{msg.event}: {msg.data}"
                    return
                job = msg.json()["job"]
                p = self.partitions.of(job["id"])
                vector = parse_vector(msg.id, P)
                assert vector is not None, msg.id
                self.changes.append((p, vector[p]))
                self.jobs[job["id"]] = job
            self.ended = "stream ended"
        except httpx.HTTPError as exc:
            self.ended = f"stream broke: {exc!r}"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._resp is not None:
            await self._resp.aclose()


def logged(client: redis.RedisCluster, partitions: Partitions, after: list[Position]) -> set[Change]:
    """Every change in the partitions' logs after ``after`` (a watch id's vector), as the cluster holds them now."""
    out: set[Change] = set()
    for i, keys in enumerate(partitions.keys):
        start = after[i]
        for entry_id, _ in client.xrange(keys.changes, min=f"({start[0]}-{start[1]}"):
            pos = parse_position(entry_id.decode())
            assert pos is not None
            out.add((i, pos))
    return out


def vector(watch_id: str) -> list[Position]:
    got = parse_vector(watch_id, P)
    assert got is not None, watch_id
    return got


def expected_jobs(ref: Reference, seen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        jid: render_watched(job, seen[jid]["creation_order"]) if jid in seen else {} for jid, job in ref.jobs().items()
    }


async def caught_up(
    w: Watcher, client: redis.RedisCluster, after: str, ref: Reference | None, what: str
) -> set[Change]:
    """Wait until ``w`` received exactly the changes logged after ``after`` (and, with ``ref``, every job is
    in its reference state); the changes."""
    deadline = time.monotonic() + CAUGHT_UP_S
    while True:
        want = await asyncio.to_thread(logged, client, w.partitions, vector(after))
        got = set(w.changes)
        states_ok = ref is None or w.jobs == expected_jobs(ref, w.jobs)
        if got == want and states_ok:
            return got
        if w.ended is not None or time.monotonic() > deadline:
            missing = sorted(want - got)
            extra = sorted(got - want)
            by_partition = sorted({p for p, _ in missing})
            raise AssertionError(
                f"{what}: {len(missing)} logged changes not received (partitions {by_partition}), "
                f"{len(extra)} received but not logged, states ok: {states_ok}, stream: {w.ended}"
            )
        await asyncio.sleep(0.3)


def assert_once_in_order(changes: list[Change]) -> None:
    assert len(changes) == len(set(changes)), "a change was received twice"
    last: dict[int, Position] = {}
    for p, pos in changes:
        assert pos > last.get(p, (0, 0)), f"partition {p}: {pos} after {last.get(p)}"
        last[p] = pos


def publish(cluster: LocalCluster, ingress: str, entries: list[dict[str, str]], ref: Reference) -> None:
    with redis.RedisCluster.from_url(cluster.url) as client:
        for entry in entries:
            ref.add(entry)
            client.xadd(ingress, dict(entry))  # type: ignore[arg-type]


def _prefix_off_the_url_node(cluster: LocalCluster) -> str:
    """A prefix whose own tag (the page-token key, five partitions) is served by a master other than the URL's
    node: the one to kill, so the API's seed node stays up."""
    while True:
        prefix = f"w{os.urandom(3).hex()}"
        if cluster.node_of(Keys(prefix).partitions) is not cluster.nodes[0]:
            return prefix


def _metrics(base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics: each sample name's (labels, value) pairs."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


@contextlib.contextmanager
def processes(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    worker = spawn(["worker"], env, tmp_path / "worker.log")
    port = free_port()
    api = spawn(["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"], env, tmp_path / "api.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(api)
        stop(worker)


def _other_master(cluster: LocalCluster, slot: int) -> Node:
    source = cluster.master_of_slot(slot)
    return next(n for n in cluster.live() if n is not source and cluster.is_master(n))


async def test_a_watch_follows_a_failover_and_a_partition_move(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None and not os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
        pytest.skip("a local Redis Cluster needs redis-server and redis-cli")
    with local_cluster(masters=3, replicas=1) as cluster:
        prefix = _prefix_off_the_url_node(cluster)
        keys, partitions = Keys(prefix), Partitions(prefix, P)
        env = {
            **os.environ,
            "JOBREG_REDIS_URL": cluster.url,
            "JOBREG_PREFIX": prefix,
            "JOBREG_BLOCK_MS": "100",
            "JOBREG_HOUSEKEEPING_INTERVAL_S": "1",
            "JOBREG_WATCH_HEARTBEAT_S": "0.5",
            "JOBREG_LOG_LEVEL": "INFO",
        }
        rng, ref = random.Random(14), Reference()
        traffic = make_traffic(rng, 180, bad_rate=0.0)
        thirds = [traffic[: len(traffic) // 3], traffic[len(traffic) // 3 : 2 * len(traffic) // 3]]
        thirds.append(traffic[2 * len(traffic) // 3 :])
        with (
            processes(env, tmp_path) as base,
            redis.RedisCluster.from_url(cluster.url) as logs,
        ):
            await asyncio.to_thread(wait_for, lambda: healthy(base), 30, "API up")
            async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=None)) as http:
                live = Watcher(http, partitions)
                await live.open()
                start = live.last_id
                try:
                    # Before: every change arrives.
                    await asyncio.to_thread(publish, cluster, keys.ingress, thirds[0], ref)
                    await caught_up(live, logs, start, ref, "before the failover")
                    before_failover = live.last_id

                    # kill -9 of the master of {<prefix>} (the page-token key, five partitions), replica caught up.
                    victim = cluster.node_of(keys.partitions)
                    moved_off = [i for i, k in enumerate(partitions.keys) if cluster.node_of(k.changes) is victim]
                    with victim.client() as c:
                        assert c.execute_command("WAIT", 1, 5000) == 1, "the victim's replica did not catch up"
                    cluster.kill(victim)
                    await asyncio.to_thread(cluster.wait_for_failover, victim)
                    await asyncio.to_thread(publish, cluster, keys.ingress, thirds[1], ref)
                    got = await caught_up(live, logs, start, ref, "the open watch, after the failover")
                    assert {p for p, pos in got if pos > vector(before_failover)[p]} & set(moved_off), (
                        "no change of the failed master's partitions after the failover: the test proves nothing"
                    )
                    # The page-token key is first read now, from the promoted replica (it was on the victim).
                    page = httpx.get(f"{base}/api/v2/jobs", params={"limit": 10}, timeout=10)
                    assert page.status_code == 200, page.text
                    assert page.json()["pagination"]["total"] == len(ref.jobs())
                    assert page.json()["pagination"]["next_page_token"]

                    # Resumed across the failover: exactly the changes after the position taken before it.
                    resumed = Watcher(http, partitions)
                    await resumed.open(last_event_id=before_failover)
                    try:
                        await caught_up(resumed, logs, before_failover, None, "resumed across the failover")
                        assert_once_in_order(resumed.changes)
                    finally:
                        await resumed.close()

                    # A partition's slot moved to another master while events flow.
                    before_move = live.last_id
                    target_i = max(range(P), key=lambda i: sum(1 for j in ref.jobs() if partitions.of(j) == i))
                    moving = partitions.keys[target_i]
                    slot = tag_slot(moving.tag)
                    target = _other_master(cluster, slot)
                    migration = asyncio.create_task(
                        asyncio.to_thread(cluster.migrate_slot, slot, target, first=move_first(moving), batch=10)
                    )
                    await asyncio.to_thread(publish, cluster, keys.ingress, thirds[2], ref)
                    assert await migration > 0
                    assert cluster.master_of_slot(slot) is target
                    # And a job of the moved partition changes after the move, so its feed must read from the target.
                    extra = make_traffic(random.Random(140), 40, bad_rate=0.0, dup_rate=0.0)
                    await asyncio.to_thread(publish, cluster, keys.ingress, extra, ref)
                    got = await caught_up(live, logs, start, ref, "the open watch, after the move")
                    after_move = {p for p, pos in got if pos > vector(before_move)[p]}
                    assert target_i in after_move, "no change of the moved partition after the move"

                    resumed = Watcher(http, partitions)
                    await resumed.open(last_event_id=before_move)
                    try:
                        await caught_up(resumed, logs, before_move, None, "resumed across the move")
                        assert_once_in_order(resumed.changes)
                    finally:
                        await resumed.close()

                    assert live.ended is None, live.ended
                    assert_once_in_order(live.changes)

                    # /metrics (summed over the API's processes): each partition's feed reads from its master now.
                    metrics = await asyncio.to_thread(_metrics, base)
                    nodes: dict[str, set[str]] = {}
                    for labels, _ in metrics["jobreg_change_feed_subscribers"]:
                        nodes.setdefault(labels["partition"], set()).add(labels["node"])
                    assert len(nodes) == P and all(victim.address not in n for n in nodes.values()), nodes
                    assert nodes[str(target_i)] == {target.address}, nodes
                    reconnects = {
                        labels["partition"]: v for labels, v in metrics["jobreg_change_feed_reconnects_total"]
                    }
                    assert all(reconnects[str(i)] >= 1 for i in [*moved_off, target_i]), reconnects
                    per_node = {labels["node"]: v for labels, v in metrics["jobreg_change_feeds"]}
                    assert victim.address not in per_node and sum(per_node.values()) % P == 0, per_node
                finally:
                    await live.close()
