"""Case 5, stream growth: a simulated week of traffic; the stream is trimmed only below what every consumer
group has acknowledged and past the retention, so memory stays bounded and nothing unconsumed is lost."""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.settings import load_settings
from tests.conftest import RedisServer
from tests.faults.conftest import report
from tests.harness import assert_registry_matches_async
from tests.reference import Reference, make_traffic
from tests.topology import standalone_only
from workers.consumer import Consumer
from workers.housekeeping import trim_stream

SEED = 5
HOUR_MS = 3_600_000
DAY_H = 24
WEEK_H = 7 * DAY_H
PER_HOUR = 150
RETENTION_H = 24
DEAD_MAXLEN = 200
NODE = 100  # stream-node-max-entries: approximate trimming works in whole nodes
AUDIT_STALL = range(2 * DAY_H, 4 * DAY_H)  # the second group stops reading for two days (> retention)

pytestmark = standalone_only("measures one server's stream trimming and memory")


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, seq = text.split("-")
    return int(ms), int(seq)


async def _drain(consumer: Consumer) -> None:
    while await consumer.step() or consumer._backlog_from is not None:
        pass


async def test_week_of_traffic_keeps_the_stream_bounded(own_redis: RedisServer) -> None:
    rng = random.Random(SEED)
    traffic = make_traffic(rng, WEEK_H * PER_HOUR // 3, bad_rate=0.02)
    traffic = (traffic * 2)[: WEEK_H * PER_HOUR]  # exactly PER_HOUR an hour (repeats are redeliveries)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    prefix = f"grow{os.urandom(3).hex()}"
    settings = load_settings(
        {},
        redis_url=own_redis.url,
        prefix=prefix,
        block_ms=1,
        stream_retention_s=RETENTION_H * 3600,
        dead_letter_maxlen=DEAD_MAXLEN,
    )
    keys = Keys(prefix)
    r = aioredis.Redis.from_url(own_redis.url)
    consumer = Consumer(r, settings)
    await consumer.ensure_group()
    await r.xgroup_create(keys.events, "audit", id="0")
    audit_held: list[bytes] = []  # read by the audit group and not yet acknowledged
    audit_seen: list[bytes] = []
    published: list[bytes] = []
    start_ms = (int((await r.time())[0]) - 8 * 86_400) * 1000
    trimmed = 0
    stream_len: dict[int, int] = {}
    stream_mem: dict[int, int] = {}
    max_len = 0
    try:
        for hour in range(WEEK_H):
            hour_ms = start_ms + hour * HOUR_MS
            pipe = r.pipeline(transaction=False)
            for i, entry in enumerate(traffic[hour * PER_HOUR : (hour + 1) * PER_HOUR]):
                pipe.xadd(keys.events, entry, id=f"{hour_ms + i * (HOUR_MS // PER_HOUR)}-*")  # type: ignore[arg-type]
            published += await pipe.execute()
            await _drain(consumer)

            if hour == AUDIT_STALL.start:  # read a little, acknowledge nothing, then go silent
                reply = await r.xreadgroup("audit", "auditor", {keys.events: ">"}, count=50)
                audit_held += [eid for eid, _ in reply[0][1]]
                audit_seen += audit_held
            elif hour not in AUDIT_STALL:
                while reply := await r.xreadgroup("audit", "auditor", {keys.events: ">"}, count=1000):
                    audit_seen += [eid for eid, _ in reply[0][1]]
                    await r.xack(keys.events, "audit", *[eid for eid, _ in reply[0][1]])
                if audit_held:
                    await r.xack(keys.events, "audit", *audit_held)
                    audit_held = []

            now_ms = hour_ms + HOUR_MS
            trimmed += await trim_stream(r, settings, now_ms=now_ms)
            await _check_nothing_needed_was_trimmed(r, keys, published, audit_seen, audit_held, now_ms)
            length = int(await r.xlen(keys.events))
            max_len = max(max_len, length)
            if hour % DAY_H == DAY_H - 1:
                day = hour // DAY_H + 1
                stream_len[day] = length
                stream_mem[day] = int(await r.memory_usage(keys.events) or 0)
            if hour >= RETENTION_H and hour not in AUDIT_STALL and hour != AUDIT_STALL.stop:
                # Steady state: about one retention window of entries, give or take a node.
                assert length <= RETENTION_H * PER_HOUR + 2 * NODE, (hour, length)

        assert sorted(audit_seen) == sorted(published), "the audit group missed or re-read entries"
        assert stream_len[4] > stream_len[2] * 1.5, "the stalled group should have held entries back"
        assert stream_len[7] <= stream_len[2] + 2 * NODE
        assert stream_mem[7] <= stream_mem[2] * 1.2
        dead = int(await r.xlen(keys.dead))
        assert ref.invalid > DEAD_MAXLEN and DEAD_MAXLEN <= dead <= DEAD_MAXLEN + NODE
        assert await r.hlen(keys.failures) == 0  # type: ignore[misc]
        memory = await r.info("memory")
    finally:
        await r.aclose()
    await assert_registry_matches_async(own_redis.url, prefix, ref)
    report(
        "stream_growth",
        simulated_days=7,
        events_published=len(published),
        entries_trimmed=trimmed,
        retention_h=RETENTION_H,
        stream_len_by_day=stream_len,
        stream_bytes_by_day=stream_mem,
        max_stream_len_during_stall=max_len,
        dead_letters_kept=dead,
        dead_letter_maxlen=DEAD_MAXLEN,
        jobs=len(ref.jobs()),
        used_memory_mb=round(int(memory["used_memory"]) / 2**20, 1),
    )


async def _check_nothing_needed_was_trimmed(
    r: aioredis.Redis,
    keys: Keys,
    published: list[bytes],
    audit_seen: list[bytes],
    audit_held: list[bytes],
    now_ms: int,
) -> None:
    first = await r.xrange(keys.events, count=1)
    if not first:
        return
    oldest = _id(first[0][0])
    # Nothing younger than the retention is gone...
    assert oldest <= (now_ms - RETENTION_H * HOUR_MS, 0) or oldest == _id(published[0]), oldest
    # ...nor anything the audit group still holds or has not read yet.
    needed: Any = audit_held[0] if audit_held else (audit_seen[-1] if audit_seen else None)
    if needed is not None and audit_held:
        assert oldest <= _id(needed), (oldest, needed)
    if len(audit_seen) < len(published):  # published and audit_seen are both in stream order
        assert oldest <= _id(published[len(audit_seen)])
    groups = {g["name"].decode(): msgspec.to_builtins(g) for g in await r.xinfo_groups(keys.events)}
    assert set(groups) == {"jobreg-workers", "audit"}
