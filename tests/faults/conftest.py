"""Fixtures for the fault-injection suite: a private redis-server per test, and the figures each case reports."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import RedisServer, start_redis_server
from tests.topology import CLUSTER, STANDALONE, TOPOLOGIES, Store

# The long variants (e.g. the 60 s load test) run with JOBREG_FAULTS_FULL=1.
FULL = os.environ.get("JOBREG_FAULTS_FULL", "") not in ("", "0")


def need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
            pytest.fail("redis-server is required (JOBREG_TEST_REQUIRE_REDIS is set)")
        pytest.skip("the fault-injection suite needs a real redis-server")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for one test (no AOF): it may be loaded, measured or killed at will."""
    need_redis_server()
    server = start_redis_server()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(params=TOPOLOGIES)
def own_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store of a fault case that runs on both topologies: a private redis-server for this test, or the
    session's 3-master cluster (shared: the cases name their own prefix, and kill only jobreg's processes)."""
    need_redis_server()
    if request.param == CLUSTER:
        cluster = request.getfixturevalue("redis_cluster")
        yield Store(CLUSTER, cluster.url, cluster=cluster)
        return
    server = start_redis_server()
    yield Store(STANDALONE, server.url, server=server)
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


def report(case: str, **figures: Any) -> None:
    """Print a case's figures (pytest -s shows them) and append them to $JOBREG_FAULTS_FIGURES if set."""
    line = json.dumps({"case": case, **figures}, sort_keys=False)
    print(f"\nFIGURES {line}")
    path = os.environ.get("JOBREG_FAULTS_FIGURES")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
