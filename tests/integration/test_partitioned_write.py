"""The write side of a partitioned registry (issue 14) on one redis-server: P stored, the ingress router,
per-partition consumers, the routing publisher; P = 4 against P = 1 on the same events."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from registry.errors import PartitionsMismatch
from registry.keys import Keys
from registry.ops.cli.commands import _migrate_partitions
from registry.ops.health import pipeline_health
from registry.ops.metrics import read_worker_counters
from registry.ops.top import read_frame
from registry.partition import Partitions, partition_of, tag_slot
from registry.query.executor import Executor
from registry.route import OneNode
from registry.settings import Settings
from registry.store import partitions as stored_partitions
from registry.wire.deadletter import DeadLetterer, list_dead, replay, sweep_markers
from registry.wire.publisher import AsyncPublisher, Publisher
from tests.conftest import RedisServer
from tests.harness import (
    assert_partitions_match,
    drained_partitions,
    jobreg,
    partitioned_jobs,
    snapshot,
    wait_for,
)
from tests.reference import Reference, make_traffic
from workers.consumer import Consumer
from workers.housekeeping import reclaim
from workers.main import Host
from workers.router import Router


def tuned(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


async def drain(consumer: Consumer) -> None:
    """Step ``consumer`` until a read of new entries comes back empty (its own backlog read first)."""
    while True:
        fresh = consumer._backlog_from is None
        if not await consumer.step() and fresh:
            return


async def publish(client: aioredis.Redis, stream: str, entries: Sequence[Mapping[str, str]]) -> None:
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, dict(entry))  # type: ignore[arg-type]
    await pipe.execute()


async def ingest(client: aioredis.Redis, settings: Settings, entries: Sequence[Mapping[str, str]]) -> Partitions:
    """A registry of ``settings.partitions`` fed ``entries`` through `<prefix>:events`, every stream drained:
    the router first (P > 1), then each partition's consumer, each in one batch (batch_size is large)."""
    parts = await stored_partitions.load(client, settings.prefix, settings.partitions)
    await publish(client, Keys(settings.prefix).ingress, entries)
    if parts.count > 1:
        await drain(Router(client, settings, OneNode(client, parts)))
    for keys in parts.keys:
        await drain(Consumer(client, settings, keys))
    return parts


def canonical(job_id: str) -> str | None:
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError):
        return None


def store_snapshot(r: redis.Redis, name: str) -> dict[bytes, tuple[str, Any]]:
    """``snapshot`` of what the projection stores (records, indexes, change log, layout), without the
    streams and their bookkeeping, metrics and the stored P, which differ by design between the two."""
    skip = (b"events", b"metrics", b"partitions")
    return {k: v for k, v in snapshot(r, name).items() if not any(s in k for s in skip)}


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> redis.Redis:
    if redis_server.process is None:
        pytest.skip("needs redis-server")
    return redis.Redis.from_url(redis_server.url)


# ---------------------------------------------------------------- the stored P


async def test_p_is_stamped_at_first_start_then_read(aredis: aioredis.Redis, settings: Settings) -> None:
    prefix = settings.prefix
    assert (await stored_partitions.stored(aredis, prefix)).count == 1  # nothing stored: read as one, not stamped
    assert await aredis.get(Keys(prefix).partitions) is None
    assert (await stored_partitions.load(aredis, prefix, 4)).count == 4
    assert (await stored_partitions.load(aredis, prefix)).count == 4  # 0: whatever is stored
    assert (await stored_partitions.load(aredis, prefix, 0, cluster=True)).count == 4
    assert (await stored_partitions.load(aredis, prefix, 4)).count == 4
    assert (await stored_partitions.stored(aredis, prefix)).count == 4


async def test_defaults_for_a_new_registry(aredis: aioredis.Redis, settings: Settings) -> None:
    assert (await stored_partitions.load(aredis, settings.prefix + "s")).count == 1
    assert (await stored_partitions.load(aredis, settings.prefix + "c", cluster=True)).count == 16


async def test_a_setting_other_than_the_stored_p_is_refused(aredis: aioredis.Redis, settings: Settings) -> None:
    await stored_partitions.load(aredis, settings.prefix, 4)
    with pytest.raises(PartitionsMismatch) as caught:
        await stored_partitions.load(aredis, settings.prefix, 2)
    message = str(caught.value)
    assert "JOBREG_PARTITIONS=2" in message and "stores 4 partitions" in message
    assert "\n" not in message and "unset JOBREG_PARTITIONS" in message
    # And a worker refuses to start on it, before it reads or writes anything.
    host = Host(tuned(settings, partitions=8))
    with pytest.raises(PartitionsMismatch):
        await host.startup({})
    await host.shutdown({})


async def test_a_registry_written_before_p_was_stored_is_one_partition(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    await ingest(aredis, settings, make_traffic(random.Random(3), 20))  # load() stamps 1 here...
    await aredis.delete(Keys(settings.prefix).partitions)  # ...as older code never did
    with pytest.raises(PartitionsMismatch, match="stores 1 partition "):
        await stored_partitions.load(aredis, settings.prefix, 4)
    assert (await stored_partitions.load(aredis, settings.prefix)).count == 1


def test_a_partitions_stream_and_bookkeeping_share_its_slot() -> None:
    one = Keys("jobreg")
    assert (one.events, one.ingress, one.failures, one.metrics) == (
        "jobreg:events",
        "jobreg:events",
        "{jobreg:events}:failures",
        "jobreg:metrics",
    )
    assert one.partitions == "{jobreg}:partitions" == Partitions("jobreg", 4).keys[2].partitions
    for keys in Partitions("jobreg", 16).keys:
        assert keys.events == f"{{{keys.tag}}}:events" and keys.ingress == "jobreg:events"
        assert keys.dead == "jobreg:events:dead"
        for name in (keys.events, keys.failures, keys.failure_counts, keys.metrics, keys.seq):
            assert name.startswith(f"{{{keys.tag}}}:")  # the first {...} is the partition's tag
        assert tag_slot(keys.tag) not in (tag_slot("jobreg"), tag_slot("jobreg:events"))


# ---------------------------------------------------------------- P = 4 against P = 1


async def test_four_partitions_hold_what_one_holds(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    rng = random.Random(11)
    traffic = make_traffic(rng, 400)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    big = tuned(settings, batch_size=100_000, block_ms=10)
    one = await ingest(aredis, tuned(big, prefix=settings.prefix + "a", partitions=1), traffic)
    four = await ingest(aredis, tuned(big, prefix=settings.prefix + "b", partitions=4), traffic)
    assert four.count == 4 and one.count == 1

    # Every job as the contract folds it, in its own partition only, every index counting it once.
    assert await assert_partitions_match(aredis, four, ref) == len(ref.jobs()) > 300
    assert await assert_partitions_match(aredis, one, ref) == len(ref.jobs())
    ids = sorted(ref.jobs())
    jobs_one, jobs_four = await partitioned_jobs(aredis, one, ids), await partitioned_jobs(aredis, four, ids)
    for job_id in ids:
        assert partition_of(job_id, 4) == four.of(job_id)
        assert {**jobs_one[job_id], "creation_order": 0} == {**jobs_four[job_id], "creation_order": 0}
    # creation_order: unique, and increasing in application order within a partition.
    for i in range(4):
        mine = [j for j in ids if four.of(j) == i]
        assert sorted(mine, key=lambda j: jobs_one[j]["creation_order"]) == sorted(
            mine, key=lambda j: jobs_four[j]["creation_order"]
        )
        assert all(jobs_four[j]["creation_order"] % 4 == i for j in mine)

    # Each partition's store, key by key, is a registry of one partition fed only that partition's events.
    for i, keys in enumerate(four.keys):
        mine = [e for e in traffic if (c := canonical(e.get("job_id", ""))) and partition_of(c, 4) == i]
        alone = tuned(big, prefix=f"{settings.prefix}c{i}", partitions=1)
        await ingest(aredis, alone, mine)
        expected = store_snapshot(sync_redis, alone.prefix)
        assert expected and store_snapshot(sync_redis, keys.tag) == expected, f"partition {i} differs"

    # Invalid entries dead-lettered by the router as by a registry of one partition (same fields, reason).
    dead_one = await list_dead(aredis, Keys(settings.prefix + "a"), count=10_000)
    dead_four = await list_dead(aredis, Keys(settings.prefix + "b"), count=10_000)
    assert dead_one and [(d.error, d.fields) for d in dead_one] == [(d.error, d.fields) for d in dead_four]
    assert drained_partitions(sync_redis, four, settings.group)


async def test_router_crash_between_republish_and_ack(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    class Crashed(Exception):
        pass

    class CrashesBeforeAck(Router):
        async def _ack(self, ids: list[bytes], **counters: Any) -> None:
            if ids:
                raise Crashed  # the process dies here: entries re-published, none acknowledged

    traffic = make_traffic(random.Random(5), 200, bad_rate=0.0)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    big = tuned(settings, batch_size=100_000, block_ms=10, partitions=4)
    clean = await ingest(aredis, tuned(big, prefix=settings.prefix + "clean"), traffic)

    s = tuned(big, consumer="r1")
    parts = await stored_partitions.load(aredis, s.prefix, 4)
    route = OneNode(aredis, parts)
    await publish(aredis, parts.keys[0].ingress, traffic)
    with pytest.raises(Crashed):
        await drain(CrashesBeforeAck(aredis, s, route))
    first = sum([await aredis.xlen(k.events) for k in parts.keys])
    assert first == len(traffic)
    # Another worker's reclaim takes the dead router's entries and routes them again.
    rescuer = tuned(big, consumer="r2", claim_idle_ms=0)
    assert await reclaim(aredis, rescuer, Router(aredis, rescuer, route)) == len(traffic)
    assert sum([await aredis.xlen(k.events) for k in parts.keys]) == 2 * len(traffic)
    for keys in parts.keys:
        await drain(Consumer(aredis, s, keys))
    assert drained_partitions(sync_redis, parts, s.group)
    # Nothing lost, nothing applied twice: the store equals the clean run's, key by key.
    assert await assert_partitions_match(aredis, parts, ref) == len(ref.jobs())
    for mine, theirs in zip(parts.keys, clean.keys, strict=True):
        assert store_snapshot(sync_redis, mine.tag) == store_snapshot(sync_redis, theirs.tag)


async def test_worker_host_consumes_every_partition(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    """Workers run for real (a Host per worker, two of them): producers on `<prefix>:events` and on the
    partition streams (the publisher routing by itself) alike; dead letters replayed through the router."""
    traffic = make_traffic(random.Random(9), 300)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    s = tuned(settings, partitions=4, block_ms=50, batch_size=50)
    hosts = [Host(tuned(s, consumer=f"w{n}")) for n in range(2)]
    for host in hosts:
        await host.startup({})
    try:
        parts = Partitions(s.prefix, 4)
        assert (await stored_partitions.stored(aredis, s.prefix)) == parts
        half = len(traffic) // 2
        await publish(aredis, Keys(s.prefix).ingress, traffic[:half])
        publisher = AsyncPublisher(aredis, partitions=parts)
        for entry in traffic[half:]:
            await publisher.publish_raw(entry)
        await asyncio.to_thread(
            wait_for, lambda: drained_partitions(sync_redis, parts, s.group), 60, "every stream drained"
        )
        assert await assert_partitions_match(aredis, parts, ref) == len(ref.jobs())
        # Entries published straight to a partition stream are decoded there: the invalid ones among them
        # are dead-lettered by that partition's consumer, the others by the router, each once.
        # A replayed dead letter goes back through the router (and is dead-lettered again: still invalid).
        dead = await list_dead(aredis, Keys(s.prefix), count=10_000)
        assert len(dead) == ref.invalid
        assert await replay(aredis, Keys(s.prefix), [dead[0].id]) == 1
        # (The dead letter is deleted after its re-publication: drained with as many letters as before
        # means the router took the replayed entry and dead-lettered it again.)
        await asyncio.to_thread(
            wait_for,
            lambda: (
                len(sync_redis.xrange(Keys(s.prefix).dead)) == ref.invalid
                and drained_partitions(sync_redis, parts, s.group)
            ),
            60,
            "the replayed entry dead-lettered again",
        )
    finally:
        for host in hosts:
            await host.shutdown({})


def test_sync_publisher_routes_to_the_jobs_partition(sync_redis: redis.Redis, settings: Settings) -> None:
    parts = Partitions(settings.prefix, 4)
    publisher = Publisher(sync_redis, partitions=parts)
    job_id = "3FA85F64-5717-4562-B3FC-2C963F66AFA6"
    publisher.created(job_id, batch_id=uuid.uuid4(), project_id=uuid.uuid4(), user_id="u", runs=1)
    publisher.publish_raw({"type": "started", "job_id": "not a uuid"})
    target = parts.keys[partition_of(job_id.lower(), 4)].events
    assert sync_redis.xlen(target) == 1
    assert sync_redis.xlen(parts.keys[0].ingress) == 1  # unroutable: the router dead-letters it
    one = Publisher(sync_redis, partitions=Partitions(settings.prefix + "x", 1))
    one.started(job_id)
    assert sync_redis.xlen(f"{settings.prefix}x:events") == 1


# ---------------------------------------------------------------- operations across partitions


async def test_health_counters_top_and_migrate_read_every_partition(
    aredis: aioredis.Redis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic = make_traffic(random.Random(21), 150)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    s = tuned(settings, partitions=4, batch_size=100_000, block_ms=10)
    parts = await ingest(aredis, s, traffic)
    route, keys = OneNode(aredis, parts), Keys(s.prefix)

    health = await pipeline_health(aredis, keys, s.group, route)
    routed = len(traffic) - ref.invalid
    assert (health.consumer_lag, health.pending, health.dead_letters) == (0, 0, ref.invalid)
    assert health.events == len(traffic) + routed  # the ingress stream, then each entry once in its partition's
    assert health.changes_retained == sum([await aredis.xlen(k.changes) for k in parts.keys]) >= len(ref.jobs())

    counters = await read_worker_counters(aredis, keys, route)
    assert counters.consumed_total == routed  # counted where applied, not again by the router
    assert counters.dead_lettered == {"invalid": ref.invalid}
    assert counters.changed == health.changes_retained

    frame = await read_frame(aredis, keys, s, Executor(aredis, keys, s), latest=5, route=route)
    assert frame.counts.total == len(ref.jobs())
    assert sum(frame.counts.by_status.values()) == len(ref.jobs())
    assert len(frame.latest) == 5 and len({c.job_id for c in frame.latest}) == 5

    # Every partition's layout is current: `jobreg migrate` says so (and stamps nothing else).
    assert await _migrate_partitions(OneNode(aredis, parts), None) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_worker_refuses_a_setting_other_than_the_stored_p(sync_redis: redis.Redis, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    env |= {"JOBREG_REDIS_URL": settings.redis_url, "JOBREG_PREFIX": settings.prefix, "JOBREG_PARTITIONS": "4"}
    sync_redis.set(Keys(settings.prefix).partitions, 2)
    done = jobreg("worker", env=env, timeout=60)
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"jobreg worker: JOBREG_PARTITIONS=4, but the registry under prefix {settings.prefix!r} stores 2 partitions "
        "(fixed at its first start): unset JOBREG_PARTITIONS (or set it to 2), or start a new registry under "
        "another JOBREG_PREFIX"
    ]
    assert sync_redis.get(Keys(settings.prefix).partitions) == b"2"


async def test_dead_letter_markers_of_partitions_with_equal_entry_ids_stay_apart(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    """Entry ids of two partition streams may coincide; their dead-letter markers (one hash, the dead
    stream's slot) must not: a crash after step 1 in each, then each partition's reclaim and sweep."""
    parts = Partitions(settings.prefix, 4)
    bad = {b"event_id": b"e-1", b"type": b"paused", b"job_id": b"3fa85f64-5717-4562-b3fc-2c963f66afa6"}
    dying = [DeadLetterer(aredis, k, settings.group, "dies") for k in parts.keys[1:3]]
    for letterer in dying:
        k = letterer.keys
        await aredis.xgroup_create(k.events, settings.group, id="0", mkstream=True)
        await aredis.xadd(k.events, bad, id="1-1")  # type: ignore[arg-type]
        await aredis.xreadgroup(settings.group, "dies", {k.events: ">"})
        await letterer._copy_all([(b"1-1", bad, f"bad in {k.tag}")])  # step 1, then the worker dies
    keys = Keys(settings.prefix)
    assert (
        sorted(await aredis.hkeys(keys.dead_sources))
        == sorted(  # type: ignore[misc]
            f"{k.tag}/1-1".encode() for k in parts.keys[1:3]
        )
    )
    # Partition 1's sweep leaves partition 2's marker (and its own, still pending) alone.
    assert await sweep_markers(aredis, parts.keys[1], settings.group) == 0
    rescuer = tuned(settings, consumer="rescuer", claim_idle_ms=0)
    for k in parts.keys[1:3]:
        assert await reclaim(aredis, rescuer, Consumer(aredis, rescuer, k)) == 1
    dead = await list_dead(aredis, keys)
    assert sorted(d.error for d in dead) == sorted(f"bad in {k.tag}" for k in parts.keys[1:3])  # each copy once
    assert await aredis.hlen(keys.dead_sources) == 0  # type: ignore[misc]
    for k in parts.keys[1:3]:
        assert (await aredis.xpending(k.events, settings.group))["pending"] == 0


def test_jobreg_publish_routes_to_the_jobs_partition(sync_redis: redis.Redis, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    env |= {"JOBREG_REDIS_URL": settings.redis_url, "JOBREG_PREFIX": settings.prefix}
    sync_redis.set(Keys(settings.prefix).partitions, 4)
    job_id = str(uuid.uuid4())
    done = jobreg("publish", "started", job_id, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    parts = Partitions(settings.prefix, 4)
    [(entry_id, fields)] = sync_redis.xrange(parts.keys_of(job_id).events)  # type: ignore[misc]
    assert entry_id.decode() == done.stdout.strip() and fields[b"job_id"] == job_id.encode()
    assert not sync_redis.exists(Keys(settings.prefix).ingress)
