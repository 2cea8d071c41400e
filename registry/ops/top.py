"""`jobreg top`: a live terminal view of job counts, throughput, pipeline health and the latest changes."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import redis.asyncio as aioredis

from registry.connection import async_client
from registry.domain.model import Origin, Status
from registry.keys import Keys
from registry.live.changes import decode_entries
from registry.ops.health import PipelineHealth, pipeline_health
from registry.ops.metrics import read_worker_counters
from registry.ops.text import printable
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import Counts, JobQuery
from registry.settings import Settings

CLEAR = "\x1b[H\x1b[2J"
LATEST = 12


@dataclass
class Sample:
    at: float
    consumed: int
    changed: int


@dataclass
class Frame:
    counts: Counts
    health: PipelineHealth
    sample: Sample
    latest: list[str]


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _rate(now: Sample, before: Sample | None, field: str) -> str:
    if before is None or now.at <= before.at:
        return "-"
    return f"{(getattr(now, field) - getattr(before, field)) / (now.at - before.at):,.1f}/s"


async def read_frame(redis: aioredis.Redis, keys: Keys, settings: Settings, executor: Executor) -> Frame:
    counts = await executor.counts(plan(JobQuery(), keys))
    health = await pipeline_health(redis, keys, settings.group)
    counters = await read_worker_counters(redis, keys)
    latest: list[str] = []
    for change in decode_entries(await redis.xrevrange(keys.changes, count=LATEST)):
        job = change.job
        stamp = datetime.fromtimestamp(change.position[0] / 1000, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        kind = "added" if change.old is None else "modified"
        latest.append(
            f"  {stamp}  {kind:<8}  {job.id[:8]}  {job.status.value:<9}  {job.origin.value:<7}  "
            f"{printable(job.user_id)[:16]:<16}  runs {job.runs}"  # a producer's text: no terminal sequences
        )
    return Frame(counts, health, Sample(time.monotonic(), counters.consumed_total, counters.changed), latest)


def render(frame: Frame, before: Sample | None, settings: Settings) -> str:
    c, h = frame.counts, frame.health
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    statuses = "  ".join(f"{s.value} {c.by_status[s.value]:,}" for s in Status)
    origins = "  ".join(f"{o.value} {c.by_origin[o.value]:,}" for o in Origin)
    lines = [
        f"jobreg top · prefix {settings.prefix} · {now}",
        "",
        f"jobs        {c.total:,}   {statuses}",
        f"origins     {origins}",
        f"throughput  events {_rate(frame.sample, before, 'consumed')}"
        f"   changes {_rate(frame.sample, before, 'changed')}",
        f"pipeline    lag {_n(h.consumer_lag)}   pending {_n(h.pending)}   dead letters {_n(h.dead_letters)}"
        f"   change log {h.changes_retained:,} (at {h.changes_position})",
        "",
        "latest changes" if frame.latest else "latest changes: none yet",
        *frame.latest,
    ]
    return "\n".join(lines) + "\n"


async def run_top(
    settings: Settings,
    *,
    interval: float = 2.0,
    frames: int | None = None,
    once: bool = False,
    out: TextIO | None = None,
) -> int:
    """Refresh every ``interval`` seconds until interrupted (or ``frames`` frames); ``once`` prints one frame.

    A one-shot frame still samples twice, ``interval`` apart, so it can show throughput.
    """
    out = out or sys.stdout
    redis = async_client(settings.redis_url, socket_connect_timeout=3, socket_timeout=5)
    keys = Keys(settings.prefix)
    executor = Executor(redis, keys, settings)
    clear = out.isatty() and not once
    before: Sample | None = None
    shown = 0
    try:
        if once:
            before = (await read_frame(redis, keys, settings, executor)).sample
            await asyncio.sleep(interval)
        while True:
            frame = await read_frame(redis, keys, settings, executor)
            out.write((CLEAR if clear else "") + render(frame, before, settings))
            if not clear:
                out.write("\n")
            out.flush()
            before = frame.sample
            shown += 1
            if once or (frames is not None and shown >= frames):
                return 0
            await asyncio.sleep(interval)
    finally:
        await redis.aclose()
