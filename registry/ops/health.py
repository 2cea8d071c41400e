"""Pipeline health read from Redis: consumer lag, pending entries, dead letters, change log position."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from registry.keys import Keys
from registry.live.changes import format_position, log_info


class PipelineHealth(msgspec.Struct, kw_only=True):
    consumer_lag: int | None  # entries not yet delivered to the workers' group (None: Redis cannot tell)
    pending: int  # delivered to a worker but not yet acknowledged
    dead_letters: int
    events: int  # entries in the events stream
    changes_position: str  # position of the latest change in the change log
    changes_retained: int  # changes kept for watch resumption


async def group_backlog(redis: aioredis.Redis, stream: str, group: str) -> tuple[int | None, int]:
    """(entries not yet delivered to the group, entries delivered but not acknowledged).

    Lag is None when Redis cannot compute it (entries deleted in the middle of the stream).
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0, 0
        raise
    for info in groups:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            lag = info.get("lag")
            return (None if lag is None else int(lag)), int(info.get("pending") or 0)
    return int(await redis.xlen(stream)), 0


async def pipeline_health(redis: aioredis.Redis, keys: Keys, group: str) -> PipelineHealth:
    lag, pending = await group_backlog(redis, keys.events, group)
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(keys.dead)
    pipe.xlen(keys.events)
    pipe.xinfo_stream(keys.changes)
    dead, events, info = await pipe.execute(raise_on_error=False)
    log = log_info(info)
    return PipelineHealth(
        consumer_lag=lag,
        pending=pending,
        dead_letters=int(dead),
        events=int(events),
        changes_position=format_position(log.last),
        changes_retained=log.length,
    )
