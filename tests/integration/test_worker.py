"""Workers against a real redis-server: consume, dead-letter, replay, share, recover, reclaim, host in arq."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from registry.errors import InvalidEvent
from registry.keys import Keys
from registry.query.executor import Executor
from registry.settings import Settings
from registry.store import record
from registry.store.projection import Projection
from registry.wire.deadletter import dead_letter, list_dead, replay
from registry.wire.events import decode_event
from registry.wire.publisher import AsyncPublisher, Publisher
from tests.reference import Reference, make_traffic, render_job
from workers.consumer import Consumer
from workers.housekeeping import reclaim

ROOT = Path(__file__).resolve().parents[2]


def tuned(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


def new_id() -> str:
    return str(uuid.uuid4())


def created(job_id: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "event_id": new_id(),
        "type": "created",
        "job_id": job_id or new_id(),
        "occurred_at": "2026-01-05T08:00:00.123456Z",
        "batch_id": new_id(),
        "project_id": new_id(),
        "user_id": "alice",
        "runs": "10",
        **extra,
    }


async def publish(r: aioredis.Redis, keys: Keys, entries: list[dict[str, str]]) -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for fields in entries:
        pipe.xadd(keys.events, fields)  # type: ignore[arg-type]
    return list(await pipe.execute())


async def run_until(consumer: Consumer, done: Callable[[], Awaitable[bool]]) -> None:
    """Run the consumer in the background until ``done()``; then stop it and wait for it."""
    await run_until_done(asyncio.create_task(consumer.run()), consumer, done)


async def run_until_done(task: asyncio.Task[None], consumer: Consumer, done: Callable[[], Awaitable[bool]]) -> None:
    try:
        deadline = time.monotonic() + 20
        while not await done():
            assert time.monotonic() < deadline, "condition not reached in time"
            assert not task.done(), "consumer loop exited"
            await asyncio.sleep(0.02)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def pending(r: aioredis.Redis, keys: Keys, settings: Settings) -> int:
    info = await r.xpending(keys.events, settings.group)
    return int(info["pending"])


def drained(r: aioredis.Redis, keys: Keys, settings: Settings) -> Callable[[], Awaitable[bool]]:
    """Every entry of the stream delivered to the group and acknowledged."""

    async def check() -> bool:
        groups = await r.xinfo_groups(keys.events)
        group = next((g for g in groups if g["name"].decode() == settings.group), None)
        if group is None:
            return False
        last = (await r.xrevrange(keys.events, count=1))[0][0]
        return bool(group["last-delivered-id"] == last and group["pending"] == 0)

    return check


async def registry_jobs(r: aioredis.Redis, keys: Keys, settings: Settings, job_ids: list[str]) -> dict[str, Any]:
    jobs = await Executor(r, keys, settings).jobs(job_ids)
    return {j.id: msgspec.to_builtins(j) for j in jobs if j is not None}


def expected_jobs(ref: Reference, got: dict[str, Any]) -> dict[str, Any]:
    # creation_order is the registry's own numbering; the reference takes it from what we got.
    return {jid: render_job(job, got.get(jid, {}).get("creation_order", -1)) for jid, job in ref.jobs().items()}


# ---------------------------------------------------------------- consuming


async def test_valid_events_are_applied_and_acked(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    job = new_id()
    ids = await publish(
        aredis,
        keys,
        [
            created(job),
            {"event_id": new_id(), "type": "started", "job_id": job, "occurred_at": "2026-01-05T08:01:00Z"},
            {"event_id": new_id(), "type": "finished", "job_id": job, "occurred_at": "2026-01-05T08:02:00Z"},
        ],
    )
    consumer = Consumer(aredis, tuned(settings, block_ms=50, consumer="c1"))
    await run_until(consumer, drained(aredis, keys, settings))
    assert await pending(aredis, keys, settings) == 0
    assert consumer.consumed == len(ids)
    assert consumer.applied_batches >= 1 and consumer.dead_lettered == 0
    [got] = await Executor(aredis, keys, settings).jobs([job])
    assert got is not None and got.status == "DONE"
    assert got.end_timestamp == "2026-01-05T08:02:00.000000+00:00"


async def test_malformed_entries_are_dead_lettered_and_acked(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    good_before, good_after = created(), created()
    bad_uuid = created(job_id="not-a-uuid")
    ids = await publish(aredis, keys, [good_before, bad_uuid, {"type": "created", "junk": "x"}, good_after])
    # Raw bytes that are not UTF-8 must survive the trip to the dead-letter stream untouched.
    binary_id = await aredis.xadd(keys.events, {b"event_id": b"\xff\xfe", b"type": b"started"})
    consumer = Consumer(aredis, tuned(settings, block_ms=50, consumer="c1"))
    await run_until(consumer, drained(aredis, keys, settings))

    assert await pending(aredis, keys, settings) == 0
    assert consumer.dead_lettered == 3
    jobs = await Executor(aredis, keys, settings).jobs([good_before["job_id"], good_after["job_id"]])
    assert all(j is not None and j.status == "PENDING" for j in jobs)

    raw = await aredis.xrange(keys.dead)
    assert [f[b"source_id"] for _, f in raw] == [ids[1], ids[2], binary_id]
    first = raw[0][1]
    assert {k.decode(): v.decode() for k, v in first.items() if k not in (b"error", b"source_id")} == bad_uuid
    assert b"job_id is not a UUID" in first[b"error"]
    assert raw[2][1][b"event_id"] == b"\xff\xfe"
    assert b"UTF-8" in raw[2][1][b"error"]

    dead = await list_dead(aredis, keys)
    assert [d.source_id for d in dead] == [i.decode() for i in (ids[1], ids[2], binary_id)]
    assert dead[0].fields == bad_uuid
    assert "missing required field event_id" in dead[1].error
    assert dead[2].fields["event_id"] == "\\xff\\xfe"
    msgspec.json.encode(dead)  # operators get JSON


async def test_replay_republishes_and_removes(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    fixed_later = created(runs="0")  # invalid until the operator's fix below
    other = created(runs="abc")
    await publish(aredis, keys, [fixed_later, other])
    s = tuned(settings, block_ms=50, consumer="c1")
    await run_until(Consumer(aredis, s), drained(aredis, keys, settings))
    dead = await list_dead(aredis, keys)
    assert len(dead) == 2

    # Replaying one id: it goes back to the stream as it was (still invalid) and is dead-lettered again.
    assert await replay(aredis, keys, [dead[0].id, "1-1"]) == 1
    remaining = await list_dead(aredis, keys)
    assert [d.id for d in remaining] == [dead[1].id]
    tail = (await aredis.xrevrange(keys.events, count=1))[0][1]
    assert {k.decode(): v.decode() for k, v in tail.items()} == fixed_later

    await run_until(Consumer(aredis, s), drained(aredis, keys, settings))
    assert [d.fields for d in await list_dead(aredis, keys)] == [other, fixed_later]

    # After "fixing the producer" (here: the entry now decodes), replay-all applies it.
    await aredis.delete(keys.dead)
    repaired = dict(fixed_later, runs="3")
    await dead_letter(aredis, keys, "0-1", repaired, "runs must be an integer")
    assert await replay(aredis, keys, None) == 1
    assert await list_dead(aredis, keys) == []
    await run_until(Consumer(aredis, s), drained(aredis, keys, settings))
    [job] = await Executor(aredis, keys, settings).jobs([fixed_later["job_id"]])
    assert job is not None and job.runs == 3


async def test_two_consumers_share_work_without_double_apply(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    traffic = make_traffic(random.Random(11), 150)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    await publish(aredis, keys, traffic)
    a = Consumer(aredis, tuned(settings, block_ms=50, batch_size=17, consumer="a"))
    b = Consumer(aredis, tuned(settings, block_ms=50, batch_size=23, consumer="b"))
    task_b = asyncio.create_task(b.run())
    try:
        await run_until(a, drained(aredis, keys, settings))
    finally:
        b.stop()
        await asyncio.wait_for(task_b, 10)

    assert a.consumed > 0 and b.consumed > 0, "both consumers should get a share"
    assert a.consumed + b.consumed == len(traffic)  # each entry delivered exactly once
    assert a.dead_lettered + b.dead_lettered == ref.invalid == await aredis.xlen(keys.dead)
    got = await registry_jobs(aredis, keys, settings, list(ref.jobs()))
    assert got == expected_jobs(ref, got)
    orders = [j["creation_order"] for j in got.values()]
    assert len(set(orders)) == len(orders)
    # Redelivering everything changes nothing: the projection is idempotent.
    valid = []
    for fields in traffic:
        with contextlib.suppress(InvalidEvent):
            valid.append(decode_event(fields))
    assert (await Projection(aredis, keys).apply(valid)).changed == 0


async def test_own_pending_entries_are_reread_on_restart(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    s = tuned(settings, block_ms=50, consumer="crashy")
    await Consumer(aredis, s).ensure_group()
    lost = [created(), created()]
    await publish(aredis, keys, lost)
    # Simulate a crash: entries delivered to "crashy" and never acknowledged.
    delivered = await aredis.xreadgroup(s.group, "crashy", {keys.events: ">"}, count=10)
    assert len(delivered[0][1]) == 2
    later = created()
    await publish(aredis, keys, [later])

    restarted = Consumer(aredis, s)
    await run_until(restarted, drained(aredis, keys, settings))
    jobs = await Executor(aredis, keys, settings).jobs([e["job_id"] for e in [*lost, later]])
    assert all(j is not None for j in jobs)
    assert restarted.consumed == 3


async def test_reclaim_from_a_dead_consumer(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    s = tuned(settings, block_ms=50, claim_idle_ms=100, consumer="alive")
    await Consumer(aredis, s).ensure_group()
    orphaned = [created(), created(job_id="bad")]
    await publish(aredis, keys, orphaned)
    await aredis.xreadgroup(s.group, "dead-host-1", {keys.events: ">"}, count=10)

    alive = Consumer(aredis, s)
    assert await reclaim(aredis, s, alive) == 0  # not idle long enough yet: a live owner keeps them
    await asyncio.sleep(0.15)
    assert await reclaim(aredis, s, alive) == 2
    assert await pending(aredis, keys, settings) == 0
    [job] = await Executor(aredis, keys, settings).jobs([orphaned[0]["job_id"]])
    assert job is not None
    assert [d.fields for d in await list_dead(aredis, keys)] == [orphaned[1]]
    # Without a consumer argument reclaim builds one from settings.
    assert await reclaim(aredis, s) == 0


async def test_entry_that_never_applies_is_dead_lettered_after_max_apply_failures(
    aredis: aioredis.Redis, settings: Settings, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = tuned(settings, block_ms=50, claim_idle_ms=50, max_apply_failures=3, consumer="w")
    poison, fine = created(), created()
    ids = await publish(aredis, keys, [poison, fine])
    consumer = Consumer(aredis, s)
    real_apply = consumer.projection.apply

    async def flaky_apply(events: Any, max_attempts: int = 20) -> Any:
        if any(e.job_id == poison["job_id"] for e in events):
            raise redis.ResponseError("ERR simulated script failure")
        return await real_apply(events, max_attempts)

    monkeypatch.setattr(consumer.projection, "apply", flaky_apply)
    while await consumer.step() == 0:  # the first step reads the (empty) own backlog
        pass
    # Delivery 1: the batch failed; job by job, `fine` went through and `poison` stays pending.
    assert consumer.apply_failures == 1
    assert [p["message_id"] for p in await aredis.xpending_range(keys.events, s.group, "-", "+", 10)] == [ids[0]]
    [job] = await Executor(aredis, keys, settings).jobs([fine["job_id"]])
    assert job is not None

    await asyncio.sleep(0.07)
    assert await reclaim(aredis, s, consumer) == 1
    [row] = await aredis.xpending_range(keys.events, s.group, "-", "+", 10)
    assert row["times_delivered"] == 2
    assert await aredis.hget(keys.failure_counts, ids[0]) == b"2"
    assert await list_dead(aredis, keys) == []
    await asyncio.sleep(0.07)
    assert await reclaim(aredis, s, consumer) == 1  # the third apply failed too: give up
    assert await pending(aredis, keys, settings) == 0
    [dead] = await list_dead(aredis, keys)
    assert dead.source_id == ids[0].decode() and dead.fields == poison
    assert dead.error.startswith("applying failed 3 times: ResponseError")
    assert "simulated script failure" in dead.error
    assert await aredis.hlen(keys.failures) == 0
    assert await aredis.hlen(keys.failure_counts) == 0


async def test_redeliveries_alone_are_dead_lettered_only_at_the_backstop(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    # Crashes redeliver what a worker held without any apply failure: that must not dead-letter a
    # valid entry early; only max_deliveries (the backstop for entries that kill workers) does.
    s = tuned(settings, block_ms=50, claim_idle_ms=10, max_apply_failures=2, max_deliveries=6, consumer="w")
    await Consumer(aredis, s).ensure_group()
    [entry_id] = await publish(aredis, keys, [created()])
    await aredis.xreadgroup(s.group, "crashed-0", {keys.events: ">"}, count=10)
    for i in range(1, 5):  # four more deliveries, each to a worker that "dies" before applying
        await asyncio.sleep(0.02)
        await aredis.xclaim(keys.events, s.group, f"crashed-{i}", 10, [entry_id])
    await asyncio.sleep(0.02)
    alive = Consumer(aredis, s)
    assert await reclaim(aredis, s, alive) == 1  # delivery 6 applies it
    assert await list_dead(aredis, keys) == []
    assert await pending(aredis, keys, settings) == 0

    [stuck] = await publish(aredis, keys, [created()])
    await aredis.xreadgroup(s.group, "crashed-0", {keys.events: ">"}, count=10)
    for i in range(1, 6):
        await asyncio.sleep(0.02)
        await aredis.xclaim(keys.events, s.group, f"crashed-{i}", 10, [stuck])
    await asyncio.sleep(0.02)
    assert await reclaim(aredis, s, alive) == 1
    [dead] = await list_dead(aredis, keys)
    assert dead.source_id == stuck.decode()
    assert dead.error.startswith("delivered 6 times without being applied (a worker crash?)")
    assert await pending(aredis, keys, settings) == 0


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server it can kill and restart")
async def test_consumer_survives_redis_outage(settings: Settings, keys: Keys) -> None:
    from tests.conftest import start_redis_server

    server = start_redis_server()
    revived: subprocess.Popen[bytes] | None = None
    r = aioredis.Redis.from_url(server.url, socket_timeout=2)
    try:
        s = tuned(settings, redis_url=server.url, block_ms=50, consumer="c")
        consumer = Consumer(r, s)
        task = asyncio.create_task(consumer.run())
        await asyncio.sleep(0.2)
        server.stop()
        await asyncio.sleep(0.5)
        assert not task.done() and consumer.errors > 0
        # The same port again, empty: the consumer recreates its group and carries on.
        revived = subprocess.Popen(
            ["redis-server", "--port", str(server.port), "--bind", "127.0.0.1", "--save", "", "--dir", server.workdir],
            stdout=subprocess.DEVNULL,
        )
        event = created()
        deadline = time.monotonic() + 20
        while True:
            try:
                await publish(r, keys, [event])
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        await run_until_done(task, consumer, drained(r, keys, s))
        [job] = await Executor(r, keys, s).jobs([event["job_id"]])
        assert job is not None
    finally:
        await r.aclose()
        if revived is not None:
            revived.kill()
            revived.wait()
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


# ---------------------------------------------------------------- publishing


def test_publisher_validates_before_publishing(settings: Settings, keys: Keys) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    pub = Publisher(r, keys)
    job = uuid.uuid4()
    entry = pub.created(
        job,
        batch_id=uuid.uuid4(),
        project_id=new_id(),
        user_id="ada",
        runs=5,
        origin="CLIENT",
        variables={"Omega_max": 14.4, "when": datetime(2026, 1, 1, tzinfo=UTC)},
    )
    pub.failed(job, errors=["QPU fault"], occurred_at=datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    with pytest.raises(InvalidEvent, match="runs"):
        pub.created(new_id(), batch_id=new_id(), project_id=new_id(), user_id="ada", runs=0)
    with pytest.raises(InvalidEvent, match="unknown type"):
        pub.publish("paused", new_id())
    with pytest.raises(InvalidEvent, match="errors"):
        pub.publish("failed", new_id(), errors={"not": "a list"})
    rows = r.xrange(keys.events)
    assert len(rows) == 2 and rows[0][0].decode() == entry
    fields = {k.decode(): v.decode() for k, v in rows[0][1].items()}
    assert fields["job_id"] == str(job) and fields["runs"] == "5"
    assert msgspec.json.decode(fields["variables"]) == {"Omega_max": 14.4, "when": "2026-01-01T00:00:00Z"}
    assert rows[1][1][b"errors"] == b'["QPU fault"]'
    assert rows[1][1][b"occurred_at"] == b"2026-01-01T00:05:00+00:00"
    pub.publish_raw({"type": "junk"})  # unvalidated on purpose
    assert r.xlen(keys.events) == 3
    r.close()


async def test_async_publisher(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    pub = AsyncPublisher(aredis, keys)
    job = new_id()
    await pub.created(job, batch_id=new_id(), project_id=new_id(), user_id="grace", runs=1)
    await pub.started(job)
    with pytest.raises(InvalidEvent):
        await pub.started("nope")
    assert await aredis.xlen(keys.events) == 2
    await run_until(Consumer(aredis, tuned(settings, block_ms=50)), drained(aredis, keys, settings))
    [got] = await Executor(aredis, keys, settings).jobs([job])
    assert got is not None and got.status == "RUNNING"


# ---------------------------------------------------------------- the arq-hosted worker


def test_arq_worker_process_applies_events_and_stops_on_sigterm(settings: Settings, keys: Keys) -> None:
    r = redis.Redis.from_url(settings.redis_url)
    pub = Publisher(r, keys)
    job = new_id()
    pub.created(job, batch_id=new_id(), project_id=new_id(), user_id="ada", runs=7)
    env = {
        **os.environ,
        "JOBREG_REDIS_URL": settings.redis_url,
        "JOBREG_PREFIX": settings.prefix,
        "JOBREG_BLOCK_MS": "100",
        "JOBREG_CONSUMER": "arq-test",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.main"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        pub.started(job)
        pub.publish_raw({"type": "junk"})
        deadline = time.monotonic() + 30
        while True:
            state = r.hget(keys.job(job.lower()), record.HANDLE)
            if state is not None and r.xlen(keys.dead) == 1 and r.xpending(keys.events, settings.group)["pending"] == 0:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "worker did not apply the events"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = out.decode()
    assert proc.returncode == 0, log
    assert "consumer arq-test stopped" in log
    # arq's queue and health key live under our prefix, not in arq's shared defaults.
    assert not r.exists("arq:queue")
    r.close()


async def test_dead_lettering_is_once_and_keeps_colliding_fields(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    s = tuned(settings, block_ms=50, consumer="c1")
    consumer = Consumer(aredis, s)
    await consumer.ensure_group()
    original = {"type": "paused", "error": "theirs", "source_id": "x-1", "~tilde": "t", "job_id": new_id()}
    [entry_id] = await publish(aredis, keys, [original])
    await aredis.xreadgroup(s.group, "c1", {keys.events: ">"}, count=10)
    fields = {k.encode(): v.encode() for k, v in original.items()}
    # Twice, as after a lost reply or when two workers race on the entry: one copy only.
    assert await consumer.dead_letterer([(entry_id, fields, "first")]) == 1
    assert await consumer.dead_letterer([(entry_id, fields, "second")]) == 0
    [(_, raw)] = await aredis.xrange(keys.dead)
    assert raw[b"error"] == b"first" and raw[b"source_id"] == entry_id
    assert raw[b"~error"] == b"theirs" and raw[b"~source_id"] == b"x-1" and raw[b"~~tilde"] == b"t"
    [dead] = await list_dead(aredis, keys)
    assert dead.fields == original
    assert await pending(aredis, keys, settings) == 0
    assert await replay(aredis, keys) == 1
    tail = (await aredis.xrevrange(keys.events, count=1))[0][1]
    assert {k.decode(): v.decode() for k, v in tail.items()} == original
