"""WAIT-based publishing (issue 14) on real servers: a master with a replica confirms every event before the
publisher returns; a master without one makes it fail within the timeout, loudly, instead of hanging or
calling the event durable (the fault test on a cluster is tests/faults/test_cluster_wait.py)."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from registry.errors import NotDurable
from registry.keys import Keys
from registry.wire.publisher import AsyncPublisher, Publisher, build_fields
from tests.conftest import RedisServer, start_redis_server
from tests.harness import jobreg


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None and not os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
        pytest.skip("WAIT needs a real redis-server (fakeredis has no replication)")


@pytest.fixture
def lone() -> Iterator[RedisServer]:
    """A master without replicas: WAIT 1 answers 0."""
    _need_redis_server()
    server = start_redis_server()
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def pair() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its replica, in sync."""
    _need_redis_server()
    master = start_redis_server()
    replica = start_redis_server(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    try:
        with redis.Redis(port=master.port) as c:
            deadline = time.monotonic() + 10
            while c.execute_command("WAIT", 1, 100) != 1:
                assert time.monotonic() < deadline, "the replica did not sync"
        yield master, replica
    finally:
        for server in (replica, master):
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


def _events(n: int) -> list[dict[str, str]]:
    return [build_fields("started", uuid.uuid4()) for _ in range(n)]


def test_events_a_replica_confirmed_are_on_it_when_publish_returns(pair: tuple[RedisServer, RedisServer]) -> None:
    master, replica = pair
    keys = Keys(f"w{os.urandom(3).hex()}")
    with redis.Redis(port=master.port) as m, redis.Redis(port=replica.port) as r:
        pub = Publisher(m, keys, replicas=1, wait_timeout_ms=5000)
        ids = pub.publish_many(_events(200))
        one = pub.started(uuid.uuid4())
        # Read from the replica right away: WAIT returned only once it held every entry.
        on_replica = [e[0].decode() for e in r.xrange(keys.events)]
        assert on_replica == [*ids, one]


async def test_async_publisher_waits_too(pair: tuple[RedisServer, RedisServer]) -> None:
    master, replica = pair
    keys = Keys(f"w{os.urandom(3).hex()}")
    client = aioredis.Redis(port=master.port)
    try:
        pub = AsyncPublisher(client, keys, replicas=1, wait_timeout_ms=5000)
        ids = await pub.publish_many(_events(50))
        ids.append(await pub.started(uuid.uuid4()))
        with redis.Redis(port=replica.port) as r:
            assert [e[0].decode() for e in r.xrange(keys.events)] == ids
    finally:
        await client.aclose()


def test_no_replica_fails_within_the_timeout(lone: RedisServer) -> None:
    keys = Keys(f"w{os.urandom(3).hex()}")
    with redis.Redis(port=lone.port) as c:
        pub = Publisher(c, keys, replicas=1, wait_timeout_ms=200)
        started = time.monotonic()
        with pytest.raises(NotDurable, match="0 of 1 replicas") as caught:
            pub.publish_many(_events(3))
        assert time.monotonic() - started < 5
        assert caught.value.pending == [0, 1, 2] and caught.value.acknowledged == 0
        assert c.xlen(keys.events) == 3  # written to the master, only not confirmed: a retry repeats them
        with pytest.raises(NotDurable):
            pub.started(uuid.uuid4())
        # Without WAIT, the same server takes the event as before.
        assert Publisher(c, keys).started(uuid.uuid4())


async def test_async_no_replica_fails_too(lone: RedisServer) -> None:
    client = aioredis.Redis(port=lone.port)
    try:
        pub = AsyncPublisher(client, Keys(f"w{os.urandom(3).hex()}"), replicas=2, wait_timeout_ms=100)
        with pytest.raises(NotDurable, match="0 of 2 replicas"):
            await pub.started(uuid.uuid4())
    finally:
        await client.aclose()


def test_a_wait_that_could_block_forever_is_refused() -> None:
    client = redis.Redis(port=1)  # never connected: the options are refused first
    with pytest.raises(ValueError, match="wait_timeout_ms"):
        Publisher(client, replicas=1, wait_timeout_ms=0)
    with pytest.raises(ValueError, match="replicas"):
        Publisher(client, replicas=-1)


def test_cli_wait_replicas(lone: RedisServer, pair: tuple[RedisServer, RedisServer]) -> None:
    prefix = f"w{os.urandom(3).hex()}"
    job, event = str(uuid.uuid4()), str(uuid.uuid4())
    env = {**os.environ, "JOBREG_REDIS_URL": lone.url, "JOBREG_PREFIX": prefix}
    args = ("publish", "started", job, "--wait-replicas", "1", "--wait-timeout-ms", "100")
    done = jobreg(*args, env=env)
    assert done.returncode == 1, done.stderr
    assert "not durable" in done.stderr and "--event-id " in done.stderr
    done = jobreg(*args, "--event-id", event, env={**env, "JOBREG_REDIS_URL": pair[0].url})
    assert done.returncode == 0, done.stderr
    with redis.Redis(port=pair[1].port) as r:
        [(entry, fields)] = r.xrange(Keys(prefix).events)
        assert entry.decode() == done.stdout.strip() and fields[b"event_id"].decode() == event
    done = jobreg("publish", "started", job, "--wait-replicas", "0", env=env)
    assert done.returncode == 2 and "at least 1" in done.stderr
