"""Housekeeping: reclaim entries stuck with dead consumers and dead-letter entries that never apply."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis

from registry.deadletter import dead_letter
from registry.metrics import record_batch
from registry.settings import Settings
from workers.consumer import Consumer, Entry

log = logging.getLogger("jobreg.housekeeping")

_PAGE = 100
# Bounds one reclaim run; the next run continues where the backlog is.
_MAX_PAGES = 100


async def reclaim(redis: aioredis.Redis, settings: Settings, consumer: Consumer | None = None) -> int:
    """Dead-letter over-delivered idle entries, then claim and process the other idle ones; return entries handled.

    Only entries idle for claim_idle_ms are touched, so a live consumer's batch in flight is never
    taken from it. ``consumer`` (whose name the entries move to) defaults to a fresh one from settings.
    """
    consumer = consumer or Consumer(redis, settings)
    handled = await _give_up(redis, settings, consumer)
    start: Any = "0-0"
    for _ in range(_MAX_PAGES):
        reply = await redis.xautoclaim(
            consumer.keys.events,
            settings.group,
            consumer.name,
            min_idle_time=settings.claim_idle_ms,
            start_id=start,
            count=settings.batch_size,
        )
        start, entries = reply[0], reply[1]
        if entries:
            log.info("reclaimed %d idle entries for %s", len(entries), consumer.name)
            await consumer.process(entries)
            handled += len(entries)
        if start in (b"0-0", "0-0"):
            break
    return handled


async def _give_up(redis: aioredis.Redis, settings: Settings, consumer: Consumer) -> int:
    """Dead-letter and acknowledge idle entries already delivered max_deliveries times."""
    keys = consumer.keys
    low = "-"
    handled = 0
    for _ in range(_MAX_PAGES):
        rows = await redis.xpending_range(
            keys.events, settings.group, min=low, max="+", count=_PAGE, idle=settings.claim_idle_ms
        )
        if not rows:
            break
        low = "(" + rows[-1]["message_id"].decode()
        times = {r["message_id"]: r["times_delivered"] for r in rows if r["times_delivered"] >= settings.max_deliveries}
        if not times:
            continue
        # XCLAIM with the idle bound is the atomic "still stuck?" check: if another reclaimer or
        # the owner touched an entry meanwhile, it is not returned and we leave it alone.
        claimed: list[Entry] = await redis.xclaim(
            keys.events, settings.group, consumer.name, settings.claim_idle_ms, list(times)
        )
        if not claimed:
            continue
        ids = [entry_id for entry_id, _ in claimed]
        reasons = await redis.hmget(keys.failures, ids)  # type: ignore[misc]
        for (entry_id, fields), last in zip(claimed, reasons, strict=True):
            detail = last.decode("utf-8", "backslashreplace") if last else "no error recorded"
            reason = f"delivered {times[entry_id]} times without being applied: {detail}"
            log.error("dead-lettering %s: %s", entry_id.decode(), reason)
            if fields:  # deleted from the stream meanwhile: only the acknowledgement is left to do
                await dead_letter(redis, keys, entry_id, fields, reason)
                consumer.dead_lettered += 1
            handled += 1
        pipe = redis.pipeline(transaction=False)
        pipe.xack(keys.events, settings.group, *ids)
        pipe.hdel(keys.failures, *ids)  # type: ignore[arg-type]
        record_batch(pipe, keys, dead_lettered={"undeliverable": sum(1 for _, fields in claimed if fields)})
        await pipe.execute()
    return handled
