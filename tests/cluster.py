"""A local Redis Cluster of real redis-server processes on free ports, for the cluster tests and benchmark.

Started like the private servers of tests/conftest.py (no Docker, data in a temporary directory,
killed at the end), with ``--cluster-enabled yes`` and a cluster bus port of its own per node
(``cluster-port``: a free port, so the default port + 10000 cannot collide or overflow), then
joined by ``redis-cli --cluster create ... --cluster-yes`` and waited on until every node reports
``cluster_state:ok`` and the same slot map.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from registry.ops.rebalance import on_source
from tests.conftest import free_port

START_TIMEOUT_S = 30.0


@dataclass
class Node:
    port: int
    bus_port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    node_timeout_ms: int = 2000  # its cluster-node-timeout, kept for a restart

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@dataclass
class LocalCluster:
    """A running local cluster: ``masters`` masters, each with ``replicas`` replicas."""

    nodes: list[Node]
    masters: int
    replicas: int
    workdir: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        """A URL naming one node (a cluster client discovers the rest)."""
        return f"redis://{self.nodes[0].address}/0"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def node_of(self, key: str) -> Node:
        """The master serving ``key``'s slot."""
        with self.nodes[0].client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def master_slots(self) -> dict[int, list[tuple[int, int]]]:
        """Each master's port -> its slot ranges (inclusive)."""
        out: dict[int, list[tuple[int, int]]] = {}
        with self.nodes[0].client() as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                out.setdefault(int(master[1]), []).append((int(start), int(end)))
        return out

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.process.poll() is None]

    def master_of_slot(self, slot: int) -> Node:
        """The master serving ``slot``, as a live node sees it."""
        with self.live()[0].client() as c:
            for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def kill(self, node: Node) -> None:
        """``kill -9`` of one node (its replica, if any, is promoted after cluster-node-timeout)."""
        node.process.kill()
        node.process.wait()

    def wait_for_failover(self, dead: Node, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every live node reports cluster_state:ok and a slot map without ``dead``."""
        deadline = time.monotonic() + timeout_s
        while not _settled(self.live(), self.masters, without=dead.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover of {dead.address} within {timeout_s:.0f}s")
            time.sleep(0.05)

    def is_master(self, node: Node) -> bool:
        with node.client() as c:
            return bool(c.execute_command("ROLE")[0] == b"master")

    def migrate_slot(
        self, slot: int, target: Node, *, first: Sequence[str] = (), batch: int = 50, pause_s: float = 0.0
    ) -> int:
        """Move ``slot`` to the master ``target`` as an operator would (SETSLOT IMPORTING/MIGRATING,
        MIGRATE of its keys, ``first`` ones first, then batches, SETSLOT NODE); the keys moved."""
        source = self.master_of_slot(slot)
        assert source is not target
        with source.client() as src, target.client() as dst:
            source_id, target_id = (c.execute_command("CLUSTER", "MYID").decode() for c in (src, dst))
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            moved, todo = 0, [k for k in first if on_source(src, k)]
            while True:
                if not todo:
                    todo = [k.decode() for k in src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)]
                    if not todo:
                        break
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 10_000, "KEYS", *todo)
                moved, todo = moved + len(todo), []
                time.sleep(pause_s)
            # The target first: from then on it serves the slot, and the source redirects to it.
            dst.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            src.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        for node in self.live():
            if node not in (source, target) and self.is_master(node):
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.kill()
        for node in self.nodes:
            node.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _start_node(root: Path, node_timeout_ms: int = 2000) -> Node:
    port, bus_port = free_port(), free_port()
    workdir = root / str(port)
    workdir.mkdir()
    return _launch(port, bus_port, workdir, node_timeout_ms)


def restart(node: Node, timeout_s: float = START_TIMEOUT_S) -> None:
    """Start a killed node again on its ports with its nodes.conf (no data: it kept none). A master whose
    slots were failed over rejoins as a replica of the promoted one and syncs from it."""
    assert node.process.poll() is not None, "restart a node that was killed"
    node.process = _launch(node.port, node.bus_port, node.workdir, node.node_timeout_ms).process
    _wait(lambda: _ping(node), f"redis-server on {node.port}", time.monotonic() + timeout_s)


def _launch(port: int, bus_port: int, workdir: Path, node_timeout_ms: int) -> Node:
    args = [
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
        *("--cluster-enabled", "yes", "--cluster-port", str(bus_port)),
        *("--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(node_timeout_ms)),
        *("--dir", str(workdir), "--save", "", "--appendonly", "no"),
    ]
    with (workdir / "redis.log").open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    return Node(port, bus_port, proc, workdir, node_timeout_ms)


def _ping(node: Node) -> bool:
    if node.process.poll() is not None:
        raise RuntimeError(f"redis-server on {node.port} exited: {(node.workdir / 'redis.log').read_text()[-2000:]}")
    try:
        with node.client() as c:
            return bool(c.ping())
    except redis.ConnectionError:
        return False


def _settled(nodes: list[Node], masters: int, without: int | None = None) -> bool:
    """Every node reports cluster_state:ok and the same slot map, with ``masters`` masters (none of
    them on port ``without``)."""
    maps = []
    for node in nodes:
        with node.client() as c:
            info = c.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            slots = c.execute_command("CLUSTER", "SLOTS")
            maps.append(sorted((int(s), int(e), int(m[1]), len(rest)) for s, e, m, *rest in slots))
    ports = {port for *_, port, _ in maps[0]}
    return all(m == maps[0] for m in maps) and len(ports) == masters and without not in ports


def _wait(condition: object, what: str, deadline: float) -> None:
    assert callable(condition)
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"local cluster: {what} not within {START_TIMEOUT_S:.0f}s")
        time.sleep(0.05)


def start_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> LocalCluster:
    """Start ``masters * (1 + replicas)`` cluster-enabled redis-servers and join them into one cluster.

    ``node_timeout_ms`` (``cluster-node-timeout``): how long a node may go unheard before the others count
    it failed; 2 s makes the failover tests quick, while a long-lived cluster on a loaded machine wants more
    (a node starved of CPU for 2 s is otherwise marked failed, and the cluster answers CLUSTERDOWN)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli must be on PATH")
    root = Path(tempfile.mkdtemp(prefix="jobreg-cluster-"))
    nodes: list[Node] = []
    cluster = LocalCluster(nodes, masters, replicas, root)
    try:
        nodes += [_start_node(root, node_timeout_ms) for _ in range(masters * (1 + replicas))]
        deadline = time.monotonic() + START_TIMEOUT_S
        for node in nodes:
            _wait(lambda node=node: _ping(node), f"redis-server on {node.port}", deadline)  # type: ignore[misc]
        create = [
            *("redis-cli", "--cluster", "create", *[n.address for n in nodes]),
            *("--cluster-replicas", str(replicas), "--cluster-yes"),
        ]
        done = subprocess.run(create, capture_output=True, text=True, timeout=START_TIMEOUT_S, env=os.environ)
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        _wait(lambda: _settled(nodes, masters), "cluster_state:ok on every node", deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def local_cluster(masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> Iterator[LocalCluster]:
    cluster = start_cluster(masters, replicas, node_timeout_ms)
    try:
        yield cluster
    finally:
        cluster.stop()


def three_masters() -> Iterator[LocalCluster]:
    """A 3-master local cluster for a test module; skipped where redis-server is missing (unless CI requires it).

    Use as ``cluster = pytest.fixture(scope="module", name="cluster")(three_masters)``.
    """
    if shutil.which("redis-server") is None and not os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
        import pytest  # only the tests import this module's fixtures; the benchmarks use local_cluster

        pytest.skip("a local Redis Cluster needs redis-server and redis-cli")
    with local_cluster(masters=3) as c:
        yield c


def add_masters(cluster: LocalCluster, n: int) -> list[Node]:
    """Start ``n`` empty masters and join them to ``cluster`` as an operator would (``redis-cli --cluster
    add-node NEW EXISTING``); they serve no slot until slots move to them (registry/ops/rebalance.py)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    new = [_start_node(cluster.workdir, cluster.nodes[0].node_timeout_ms) for _ in range(n)]

    def known() -> bool:
        total = len([n for n in cluster.nodes if n.process.poll() is None])
        for node in cluster.live():
            with node.client() as c:
                info = c.execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if f"cluster_known_nodes:{total}" not in text or "cluster_state:ok" not in text:
                    return False
        return True

    for node in new:
        _wait(lambda node=node: _ping(node), f"redis-server on {node.port}", deadline)  # type: ignore[misc]
        add = ["redis-cli", "--cluster", "add-node", node.address, cluster.nodes[0].address]
        done = subprocess.run(add, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster add-node failed:\n{done.stdout}\n{done.stderr}")
        cluster.nodes.append(node)
        # add-node refuses to run while the nodes disagree about the configuration: the next waits for this one.
        _wait(known, "every node knowing the new master", deadline)
    return new
