"""Simulated emulator/QPU traffic for `jobreg up --demo`: a fixed, documented batch, then live batches.

The fixed ids (README, Querying) make the README's examples answer as written. The demo leaves no job
open behind it: it cancels its open jobs when it stops, and on start those a crashed run left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import redis

from registry.connection import async_client
from registry.domain.model import Status
from registry.keys import Keys
from registry.ops.health import pipeline_health
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import MAX_LIMIT, JobQuery
from registry.settings import Settings
from registry.wire.publisher import Publisher

USERS = ["ada", "grace", "alan", "marie", "enrico", "lise"]
# The first project and the batch are the README's; the seeded batch's first job is its example job.
PROJECTS = [
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
    "44444444-4444-4444-8444-444444444444",
    "55555555-5555-4555-8555-555555555555",
]
SEED_BATCH = "11111111-1111-4111-8111-111111111111"
SEED_JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"
SEED_AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# (job id, runs, final event): started 5 s after created, ended a minute later.
SEED_JOBS = [
    (SEED_JOB, 100, "finished"),
    ("0f2a6b1e-5c3d-4e7f-8a9b-1c2d3e4f5a6b", 50, "failed"),
    ("7d4e2c1b-9a8f-4b6e-8d5c-3a2b1c0d9e8f", 500, "finished"),
    ("a3b4c5d6-e7f8-4a9b-8c0d-1e2f3a4b5c6d", 50, "canceled"),
]
OPEN = (Status.PENDING, Status.RUNNING, Status.CANCELING)
_SEED_NS = uuid.UUID("6a0e5b8c-2f1d-4c3b-9e7a-5d4c3b2a1f0e")
DRAIN_WAIT_S = 15.0


@dataclass
class _Job:
    id: str
    stage: str = "created"
    errors: list[str] = field(default_factory=list)


def seed(publisher: Publisher) -> None:
    """Publish the fixed batch. Its events have fixed ids and times, so publishing it again changes nothing."""
    for n, (job, runs, end) in enumerate(SEED_JOBS):
        created = SEED_AT + timedelta(minutes=n)

        def event_id(kind: str, job: str = job) -> str:
            return str(uuid.uuid5(_SEED_NS, f"{job}:{kind}"))

        publisher.created(
            job,
            occurred_at=created,
            event_id=event_id("created"),
            batch_id=SEED_BATCH,
            project_id=PROJECTS[0],
            user_id="ada",
            runs=runs,
            origin="CLIENT",
            variables={"Omega_max": 14.4},
        )
        publisher.started(job, occurred_at=created + timedelta(seconds=5), event_id=event_id("started"))
        errors = ["QPU calibration drift"] if end == "failed" else None
        ended = created + timedelta(seconds=65)
        publisher.publish(end, job, occurred_at=ended, event_id=event_id(end), **({"errors": errors} if errors else {}))


async def _left_open(settings: Settings) -> list[str]:
    """Ids of the demo's jobs still open (its projects and users): what an earlier run left behind."""
    client = async_client(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)
    keys = Keys(settings.prefix)
    try:
        # Events an earlier run published but the workers have not applied yet would be missed.
        deadline = time.monotonic() + DRAIN_WAIT_S
        while (await pipeline_health(client, keys, settings.group)).consumer_lag and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        executor = Executor(client, keys, settings)
        query = JobQuery(project_ids=tuple(PROJECTS), user_ids=tuple(USERS), statuses=OPEN, limit=MAX_LIMIT)
        ids: list[str] = []
        while True:
            page = await executor.run(plan(query, keys))
            ids += page.job_ids
            if len(page.job_ids) < MAX_LIMIT:
                return ids
            query = msgspec.structs.replace(query, offset=query.offset + MAX_LIMIT)
    finally:
        await client.aclose()


def cancel(publisher: Publisher, job_ids: list[str], why: str) -> None:
    now = datetime.now(UTC)
    for job in job_ids:
        publisher.canceled(job, occurred_at=now, errors=[why])


def run_demo(publisher: Publisher, settings: Settings, rate: float = 5.0, stop_after: float | None = None) -> None:
    """Seed, close what an earlier run left open, then publish about ``rate`` events per second until
    interrupted (or ``stop_after`` seconds); on the way out, cancel the jobs left open."""
    seed(publisher)
    cancel(publisher, asyncio.run(_left_open(settings)), "demo restarted")
    rng = random.Random()
    live: list[_Job] = []
    started = time.monotonic()
    try:
        while stop_after is None or time.monotonic() - started < stop_after:
            _step(publisher, rng, live)
            time.sleep(1.0 / rate)
    finally:
        # Best effort: a store already gone leaves them to the next run's sweep.
        with contextlib.suppress(redis.RedisError):
            cancel(publisher, [job.id for job in live], "demo stopped")


def _step(publisher: Publisher, rng: random.Random, live: list[_Job]) -> None:
    now = datetime.now(UTC)
    if len(live) < 40 and rng.random() < 0.3:
        batch, project, user = str(uuid.uuid4()), rng.choice(PROJECTS), rng.choice(USERS)
        origin = rng.choice(["CLIENT", "CLIENT", "AZURE", "OVH"])
        for _ in range(rng.randint(1, 6)):
            job = _Job(str(uuid.uuid4()))
            publisher.created(
                job.id,
                occurred_at=now,
                batch_id=batch,
                project_id=project,
                user_id=user,
                runs=rng.choice([50, 100, 500, 1000]),
                origin=origin,
                variables={"Omega_max": round(rng.uniform(1, 20), 2)},
            )
            live.append(job)
    elif live:
        job = rng.choice(live)
        if job.stage == "created":
            job.stage = "started"
            publisher.started(job.id, occurred_at=now)
            return
        roll = rng.random()
        if roll < 0.8:
            publisher.finished(job.id, occurred_at=now)
        elif roll < 0.93:
            publisher.failed(job.id, occurred_at=now, errors=["QPU calibration drift"])
        else:
            publisher.canceling(job.id, occurred_at=now)
            publisher.canceled(job.id, occurred_at=now)
        live.remove(job)
