"""Simulated emulator/QPU traffic for `jobreg up --demo`: batches appear and move through their lifecycle."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from registry.wire.publisher import Publisher

USERS = ["ada", "grace", "alan", "marie", "enrico", "lise"]
PROJECTS = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(4)]


@dataclass
class _Job:
    id: str
    stage: str = "created"
    errors: list[str] = field(default_factory=list)


def run_demo(publisher: Publisher, rate: float = 5.0, stop_after: float | None = None) -> None:
    """Publish about ``rate`` events per second until interrupted (or ``stop_after`` seconds)."""
    rng = random.Random()
    live: list[_Job] = []
    started = time.monotonic()
    while stop_after is None or time.monotonic() - started < stop_after:
        now = datetime.now(UTC)
        if len(live) < 40 and rng.random() < 0.3:
            batch, project, user = str(uuid.uuid4()), rng.choice(PROJECTS), rng.choice(USERS)
            origin = rng.choice(["CLIENT", "CLIENT", "AZURE", "OVH"])
            for _ in range(rng.randint(1, 6)):
                job = _Job(str(uuid.uuid4()))
                publisher.publish(
                    "created",
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
                publisher.publish("started", job.id, occurred_at=now)
            else:
                roll = rng.random()
                if roll < 0.8:
                    publisher.publish("finished", job.id, occurred_at=now)
                elif roll < 0.93:
                    publisher.publish("failed", job.id, occurred_at=now, errors=["QPU calibration drift"])
                else:
                    publisher.publish("canceling", job.id, occurred_at=now)
                    publisher.publish("canceled", job.id, occurred_at=now)
                live.remove(job)
        time.sleep(1.0 / rate)
