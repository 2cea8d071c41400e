"""Pipeline health read from Redis: consumer lag, pending entries, dead letters, change log position."""

from __future__ import annotations

from functools import partial

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from registry.keys import Keys
from registry.live.changes import format_position, log_info
from registry.route import Route


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


async def _partition_backlog(client: aioredis.Redis, *, stream: str, group: str) -> tuple[int | None, int]:
    return await group_backlog(client, stream, group)


async def backlog(redis: aioredis.Redis, keys: Keys, group: str, route: Route | None = None) -> tuple[int | None, int]:
    """``group_backlog`` summed over the ingress stream and, on a registry of several partitions, every
    partition's stream: an entry the router has routed but its partition has not yet applied is backlog
    too. The ingress stream is read first, so an entry routed between two reads is counted in its partition.
    """
    backlogs = [await group_backlog(redis, keys.ingress, group)]
    if route is not None and route.partitions.count > 1:
        for i, k in enumerate(route.partitions.keys):
            backlogs.append(await route.call(i, partial(_partition_backlog, stream=k.events, group=group)))
    lags = [lag for lag, _ in backlogs]
    return (None if None in lags else sum(lag or 0 for lag in lags)), sum(waiting for _, waiting in backlogs)


async def pipeline_health(redis: aioredis.Redis, keys: Keys, group: str, route: Route | None = None) -> PipelineHealth:
    """The pipeline's health; with a ``route`` of several partitions, summed over the ingress stream and
    every partition's stream and change log (``changes_position``: the latest change of any partition)."""
    if route is None or route.partitions.count == 1:
        parts = [(redis, keys)]
        streams = [(redis, keys.events)]
    else:
        parts = [(route.client(i), k) for i, k in enumerate(route.partitions.keys)]
        streams = [(redis, keys.ingress), *((client, k.events) for client, k in parts)]
    lags: list[int | None] = []
    pending = events = 0
    for client, stream in streams:
        lag, waiting = await group_backlog(client, stream, group)
        lags.append(lag)
        pending += waiting
        events += int(await client.xlen(stream))
    logs = []
    for client, k in parts:
        info = await client.xinfo_stream(k.changes) if await client.exists(k.changes) else None
        logs.append(log_info(info if info is not None else ResponseError("no such key")))
    return PipelineHealth(
        consumer_lag=None if None in lags else sum(lag or 0 for lag in lags),
        pending=pending,
        dead_letters=int(await redis.xlen(keys.dead)),
        events=events,
        changes_position=format_position(max(log.last for log in logs)),
        changes_retained=sum(log.length for log in logs),
    )
