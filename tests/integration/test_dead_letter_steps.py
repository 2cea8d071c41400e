"""Dead-lettering and replay in one-slot steps: the state a crash leaves between two steps, then recovery.

A worker that dies between its steps leaves exactly the Redis state built here step by step (the
steps are the production calls, run up to the crash point); a real consumer, reclaim, replay or
sweep then takes over. Each entry ends up dead-lettered once and acknowledged, or re-published once
and deleted, never lost. The same steps on a real cluster: tests/integration/test_cluster_scripts.py.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.lua import source
from registry.settings import Settings
from registry.wire.deadletter import DeadLetterer, dead_letter, list_dead, replay, sweep_markers
from tests.integration.test_worker import created, pending, publish
from workers.consumer import Consumer
from workers.housekeeping import reclaim

BAD = {"event_id": "e-1", "type": "paused", "job_id": "not-a-uuid"}


def as_fields(entry: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in entry.items()}


async def held_by(
    r: aioredis.Redis, settings: Settings, keys: Keys, name: str, entries: list[dict[str, str]]
) -> list[bytes]:
    """Publish ``entries`` and deliver them to consumer ``name`` (so they are pending for it)."""
    await r.xgroup_create(keys.events, settings.group, id="0", mkstream=True)
    ids = await publish(r, keys, entries)
    await r.xreadgroup(settings.group, name, {keys.events: ">"}, count=100)
    return ids


def letterer(r: aioredis.Redis, settings: Settings, keys: Keys, name: str) -> DeadLetterer:
    return DeadLetterer(r, keys, settings.group, name, settings.dead_letter_maxlen)


async def test_crash_after_the_copy_the_next_holder_reuses_it(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "dies", [BAD])
    # Step 1 only, then the worker "dies": the copy exists, the entry is still pending.
    await letterer(aredis, settings, keys, "dies")._copy_all([(entry_id, as_fields(BAD), "first reason")])
    assert await aredis.xlen(keys.dead) == 1 and await pending(aredis, keys, settings) == 1
    # Another worker reclaims the idle entry, finds it invalid again and dead-letters it.
    rescuer = Consumer(aredis, msgspec.structs.replace(settings, consumer="rescuer", claim_idle_ms=0))
    assert await reclaim(aredis, rescuer.settings, rescuer) == 1
    [dead] = await list_dead(aredis, keys)
    assert dead.source_id == entry_id.decode() and dead.error == "first reason"  # the first copy, kept
    assert await pending(aredis, keys, settings) == 0
    assert await aredis.hlen(keys.dead_sources) == 0  # type: ignore[misc]
    assert rescuer.dead_lettered == 1


async def test_a_copy_trimmed_away_before_the_retry_is_made_again(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "dies", [BAD])
    await letterer(aredis, settings, keys, "dies")._copy_all([(entry_id, as_fields(BAD), "r")])
    await aredis.delete(keys.dead)  # as if MAXLEN had trimmed it
    assert await letterer(aredis, settings, keys, "dies")([(entry_id, as_fields(BAD), "r")]) == 1
    assert [d.source_id for d in await list_dead(aredis, keys)] == [entry_id.decode()]


async def test_crash_after_the_acknowledgement_leaves_a_marker_the_sweep_removes(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "dies", [BAD])
    dl = letterer(aredis, settings, keys, "dies")
    await dl._copy_all([(entry_id, as_fields(BAD), "r")])
    await dl._ack(keys=[keys.events, keys.failures, keys.failure_counts], args=[settings.group, "dies", entry_id])
    assert await aredis.hlen(keys.dead_sources) == 1  # type: ignore[misc]
    assert await sweep_markers(aredis, keys, settings.group) == 1
    assert await aredis.hlen(keys.dead_sources) == 0  # type: ignore[misc]
    assert await aredis.xlen(keys.dead) == 1 and await pending(aredis, keys, settings) == 0


async def test_the_sweep_keeps_the_marker_of_an_entry_still_pending(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "dies", [BAD])
    await letterer(aredis, settings, keys, "dies")._copy_all([(entry_id, as_fields(BAD), "r")])
    assert await sweep_markers(aredis, keys, settings.group) == 0
    assert await aredis.hget(keys.dead_sources, entry_id) is not None  # type: ignore[misc]


async def test_a_worker_whose_entry_was_claimed_away_neither_copies_nor_acknowledges(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "slow", [BAD])
    await aredis.xclaim(keys.events, settings.group, "fast", 0, [entry_id])
    assert await letterer(aredis, settings, keys, "slow")([(entry_id, as_fields(BAD), "late")]) == 0
    assert await aredis.xlen(keys.dead) == 0 and await pending(aredis, keys, settings) == 1
    # The slow one copied, then lost the entry before acknowledging: the new holder reuses the copy.
    await letterer(aredis, settings, keys, "slow")._copy_all([(entry_id, as_fields(BAD), "slow's")])
    await aredis.xclaim(keys.events, settings.group, "fast2", 0, [entry_id])
    slow_ack = await letterer(aredis, settings, keys, "slow")._ack(
        keys=[keys.events, keys.failures, keys.failure_counts], args=[settings.group, "slow", entry_id]
    )
    assert slow_ack == [0]
    assert await letterer(aredis, settings, keys, "fast2")([(entry_id, as_fields(BAD), "fast's")]) == 1
    assert [d.error for d in await list_dead(aredis, keys)] == ["slow's"]
    assert await pending(aredis, keys, settings) == 0


async def test_failure_bookkeeping_is_acknowledged_away_in_the_events_slot(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    [entry_id] = await held_by(aredis, settings, keys, "c", [BAD])
    await aredis.hset(keys.failures, entry_id, "boom")  # type: ignore[misc]
    await aredis.hset(keys.failure_counts, entry_id, 3)  # type: ignore[misc]
    assert await letterer(aredis, settings, keys, "c")([(entry_id, as_fields(BAD), "r")]) == 1
    assert not await aredis.exists(keys.failures, keys.failure_counts)


async def test_replay_crash_after_publishing_never_publishes_twice(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    good = created()
    await dead_letter(aredis, keys, "0-1", as_fields(good), "was broken")
    [d] = await list_dead(aredis, keys)
    # Step 1 of a replay, then the operator's command dies before deleting the dead letter.
    rows = await aredis.xrange(keys.dead)
    publish_script = aredis.register_script(source("registry.wire", "replay_publish"))
    flat = [x for kv in as_fields(good).items() for x in kv]
    await publish_script(keys=[keys.events, keys.replayed], args=[d.id, len(flat), *flat])
    assert await aredis.xlen(keys.events) == 1 and len(rows) == 1
    # Replaying again finishes the job: no second publication, the dead letter and marker gone.
    assert await replay(aredis, keys) == 1
    assert await aredis.xlen(keys.events) == 1
    assert await list_dead(aredis, keys) == [] and not await aredis.exists(keys.replayed)
    [(_, fields)] = await aredis.xrange(keys.events)
    assert fields == as_fields(good)


async def test_the_sweep_finishes_an_interrupted_replay(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    good = created()
    await dead_letter(aredis, keys, "0-1", as_fields(good), "was broken")
    [d] = await list_dead(aredis, keys)
    flat = [x for kv in as_fields(good).items() for x in kv]
    await aredis.register_script(source("registry.wire", "replay_publish"))(
        keys=[keys.events, keys.replayed], args=[d.id, len(flat), *flat]
    )
    assert await sweep_markers(aredis, keys, settings.group) == 1
    assert await list_dead(aredis, keys) == [] and await aredis.xlen(keys.events) == 1
    assert await replay(aredis, keys) == 0


async def test_a_worker_adopts_failure_counts_from_the_old_key_names(
    aredis: aioredis.Redis, settings: Settings, keys: Keys
) -> None:
    await aredis.hset(keys.legacy_failure_counts, mapping={"1-1": 4, "2-1": 1})  # type: ignore[misc]
    await aredis.hset(keys.legacy_failures, mapping={"1-1": "old reason"})  # type: ignore[misc]
    await aredis.hset(keys.failure_counts, "2-1", 2)  # type: ignore[misc]  # newer: kept
    await Consumer(aredis, settings).ensure_group()
    assert await aredis.hgetall(keys.failure_counts) == {b"1-1": b"4", b"2-1": b"2"}  # type: ignore[misc]
    assert await aredis.hgetall(keys.failures) == {b"1-1": b"old reason"}  # type: ignore[misc]
    assert not await aredis.exists(keys.legacy_failures, keys.legacy_failure_counts)
    await Consumer(aredis, settings).ensure_group()  # nothing left to adopt: a no-op
    assert await aredis.hlen(keys.failure_counts) == 2  # type: ignore[misc]
