"""Housekeeping: reclaim entries of dead consumers, give up on entries that never apply, trim the stream."""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from registry.keys import Keys
from registry.lua import source
from registry.ops.metrics import record_batch
from registry.ops.text import printable
from registry.settings import Settings
from registry.wire.deadletter import sweep_markers
from workers.consumer import Consumer, Entry

log = logging.getLogger("jobreg.housekeeping")

_PAGE = 100
# Bounds one reclaim run; the next run continues where the backlog is.
_MAX_PAGES = 100


async def reclaim(redis: aioredis.Redis, settings: Settings, consumer: Consumer | None = None) -> int:
    """Dead-letter idle entries delivered max_deliveries times, then claim and process the other idle ones.

    Returns the entries handled.

    Only entries idle for claim_idle_ms are touched, so a live consumer's batch in flight is never
    taken from it. ``consumer`` (whose name the entries move to) defaults to a fresh one from settings.
    """
    consumer = consumer or Consumer(redis, settings)
    # Markers a crash left between the one-slot steps of dead-lettering or replay.
    if swept := await sweep_markers(redis, consumer.keys, settings.group, consumer.dead_letterer.dead):
        log.info("removed %d dead-letter/replay markers left by an interrupted step", swept)
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
    """Dead-letter (and acknowledge) idle entries already delivered max_deliveries times.

    The backstop for an entry that neither applies nor fails cleanly (one that kills the worker holding
    it). Apply failures are counted and dead-lettered by the consumer itself at max_apply_failures.
    """
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
        items = []
        gone = []
        for (entry_id, fields), last in zip(claimed, reasons, strict=True):
            detail = last.decode("utf-8", "backslashreplace") if last else "no apply error recorded"
            reason = f"delivered {times[entry_id]} times without being applied (a worker crash?): {detail}"
            log.error("dead-lettering %s: %s", entry_id.decode(), printable(reason))
            if fields:
                items.append((entry_id, fields, reason))
            else:  # deleted from the stream meanwhile: only the acknowledgement is left to do
                gone.append(entry_id)
            handled += 1
        moved = await consumer.dead_letter(items)
        pipe = redis.pipeline(transaction=False)
        if gone:
            pipe.xack(keys.events, settings.group, *gone)
        record_batch(pipe, keys, dead_lettered={"undeliverable": moved})
        await pipe.execute()
    return handled


_TRIM_LIMIT = 10_000


def _missing(exc: ResponseError) -> bool:
    text = str(exc)
    return "no such key" in text.lower() or "NOGROUP" in text


async def trim_stream(
    redis: aioredis.Redis, settings: Settings, now_ms: int | None = None, keys: Keys | None = None
) -> int:
    """Trim acknowledged entries older than stream_retention_s from an events stream; return entries removed.

    ``now_ms`` defaults to Redis's own clock (stream ids are Redis timestamps); tests pass a simulated one.
    ``keys`` names the stream (a partition's, or the ingress); by default the registry of one partition.
    """
    keys = keys or Keys(settings.prefix)
    script = redis.register_script(source("workers", "trim_stream"))
    removed = 0
    for _ in range(_MAX_PAGES):
        n, _bound = await script(
            keys=[keys.events],
            args=["" if now_ms is None else now_ms, settings.stream_retention_s * 1000, _TRIM_LIMIT],
        )
        removed += int(n)
        if int(n) < _TRIM_LIMIT:
            break
    if removed:
        log.info("trimmed %d acknowledged entries from %s", removed, keys.events)
    return removed


async def prune_consumers(redis: aioredis.Redis, settings: Settings, keep: str = "", keys: Keys | None = None) -> int:
    """Remove idle members without pending entries from the group on ``keys.events`` (not ``keep``); return how many."""
    keys = keys or Keys(settings.prefix)
    try:
        removed = int(
            await redis.register_script(source("workers", "prune_consumers"))(
                keys=[keys.events], args=[settings.group, settings.consumer_idle_ms, keep]
            )
        )
    except ResponseError as exc:
        if _missing(exc):
            return 0
        raise
    if removed:
        log.info("removed %d idle consumers without pending entries from %s", removed, settings.group)
    return removed
