"""Shared fixtures: a private redis-server per test session (fakeredis only when none can be started), and a
local 3-master Redis Cluster per session for the modules that run on both topologies (tests/topology.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis

from registry import lua
from registry.keys import Keys
from registry.settings import Settings, load_settings
from tests.topology import CLUSTER, STANDALONE, TOPOLOGIES, Store, async_client

if TYPE_CHECKING:
    from tests.cluster import LocalCluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes] | None
    workdir: str

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def layout_fixture_store(layout: int) -> Iterator[RedisServer]:
    """A private redis-server loaded with a copy of tests/fixtures/layout<N>.rdb (a registry written by that
    layout's code, see tests/fixtures/make_layout<N>.py); a copy, since the migration tests write to it."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server (the fixture is an RDB file)")
    name = f"layout{layout}.rdb"
    workdir = tempfile.mkdtemp(prefix=f"jobreg-v{layout}-")
    shutil.copy(Path(__file__).resolve().parent / "fixtures" / name, Path(workdir) / name)
    server = start_redis_server(workdir=workdir, dbfilename=name)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_redis_server(
    appendonly: bool = False,
    appendfsync: str = "everysec",
    *,
    workdir: str | None = None,
    dbfilename: str = "dump.rdb",
    start_timeout_s: float = 4,
    extra_args: tuple[str, ...] = (),
) -> RedisServer:
    """Start a private redis-server on a free port; its data dies with it unless ``workdir`` keeps it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not on PATH")
    workdir = workdir or tempfile.mkdtemp(prefix="jobreg-redis-")
    port = free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        os.path.abspath(workdir),
        "--dbfilename",
        dbfilename,
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        appendfsync,
        "--slowlog-log-slower-than",
        "5000",
        *extra_args,
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + start_timeout_s
    while True:
        try:
            client.ping()
            break
        except (redis.ConnectionError, redis.BusyLoadingError):  # BusyLoading: still reading a kept dump
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)
    client.close()
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, proc, workdir)


def start_fake_server() -> RedisServer:
    """fakeredis over TCP, so even subprocess tests run where redis-server cannot be installed."""
    import threading

    from fakeredis import TcpFakeServer

    lua.teach_fakeredis()  # as registry/ops/embedded.py does: fakeredis cannot parse `#!lua` otherwise
    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return RedisServer(f"redis://127.0.0.1:{port}/0", port, None, tempfile.mkdtemp(prefix="jobreg-fake-"))


SLOW_SUITES = ("tests/faults/",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The fault-injection suite (load test included) is marked slow as a whole, so a new case there
    # cannot be forgotten by `make test-fast`.
    for item in items:
        if item.nodeid.startswith(SLOW_SUITES):
            item.add_marker(pytest.mark.slow)
        # A standalone-only test of a module that runs on both topologies: its cluster run says why not.
        only = item.get_closest_marker("standalone_only")
        callspec = getattr(item, "callspec", None)
        on_cluster = callspec is not None and CLUSTER in (
            callspec.params.get("store"),
            callspec.params.get("own_store"),
        )
        undiagnosed = item.get_closest_marker("cluster_xfail")
        if undiagnosed is not None and on_cluster:
            item.add_marker(pytest.mark.xfail(reason=f"on a cluster: {undiagnosed.args[0]}", strict=False))
        if only is not None and on_cluster:
            item.add_marker(pytest.mark.skip(reason=f"standalone only: {only.args[0] if only.args else ''}"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
            pytest.fail("redis-server is required (JOBREG_TEST_REQUIRE_REDIS is set)")
        server = start_fake_server()
    else:
        server = start_redis_server()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """One local 3-master cluster for the whole session, started by the first test that runs on it."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
            pytest.fail("redis-server and redis-cli are required (JOBREG_TEST_REQUIRE_REDIS is set)")
        pytest.skip("a local Redis Cluster needs redis-server and redis-cli")
    from tests.cluster import local_cluster  # it imports this module

    # No replicas, no failover wanted: a long node timeout, so a CPU-starved node is not counted failed.
    with local_cluster(masters=3, node_timeout_ms=30_000) as cluster:
        yield cluster


@pytest.fixture(scope="session", params=TOPOLOGIES)
def store(request: pytest.FixtureRequest) -> Store:
    """The Redis of a test that runs on both topologies (``pytestmark = both_topologies``): the session's
    standalone server, or its cluster. Session-scoped so pytest runs each topology's tests together."""
    if request.param == STANDALONE:
        server: RedisServer = request.getfixturevalue("redis_server")
        return Store(STANDALONE, server.url, server=server)
    cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    return Store(CLUSTER, cluster.url, cluster=cluster)


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    # A fresh prefix per test: tests never see each other's keys and never flush anything. On the
    # test's topology when it runs on both, else on the session's standalone server.
    if "store" in request.fixturenames:
        url = request.getfixturevalue("store").url
    else:
        url = request.getfixturevalue("redis_server").url
    prefix = f"t{os.urandom(4).hex()}"
    return load_settings({}, redis_url=url, prefix=prefix)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)


@pytest.fixture
async def aredis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    # redis-py's cluster client on a cluster: single-key commands only (tests/topology.py).
    client = async_client(settings.redis_url)
    yield client
    await client.aclose()
