"""The events a backend publishes now, for the under-load run: new jobs at the tail of the stored data, in its
projects, and the lifecycle steps of the jobs it holds unfinished.

The stored data (tests/benchmarks/datagen.py) ends at ``datagen.END_US``; a backend publishing now creates
jobs after that, so their ``created_at`` and ``updated_at`` come after every stored job's (the tail of each
time order), and their ``start``/``end`` after that. They belong to the projects, users and batches' kinds
(origin, runs) the data already holds, in its proportions (a template batch is drawn weighted by its size;
a small share of new batches opens a new project), and each new batch gets a new id, as a new submission
does. Besides new jobs, a share of the events moves jobs the data holds unfinished, the most recently
created first: PENDING ones start (and some finish within the burst), RUNNING ones end. Every event is
stamped on a clock running at the asked rate from just after the data's end and published in that order.

The load this replaces (``--load-shape spread``, :func:`tests.benchmarks.loadgen.encoded_events`) is a
second datagen plan: new projects, users and batches whose times are spread over the stored data's whole
past range, i.e. every new job lands in the middle of every time order, which no backend does.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.benchmarks import datagen, pg
from tests.benchmarks.datagen import END_US, US_PER_S, Batch, Plan, job_events, uuid4_from

# Share of new batches in a project the data does not hold yet (a new customer).
NEW_PROJECT_SHARE = 0.02
# Share of the events that move jobs the data holds unfinished (the rest create and move new jobs).
UPDATE_SHARE = 0.1
# Events per new job within a burst of a minute (created; started and a terminal event for many, the rest
# fall after its end and are not published): sets the job rate, so the burst's clock runs at about wall time.
EVENTS_PER_JOB = 1.8
# How a RUNNING job ends (datagen's terminal shares among started jobs, roughly).
_ENDINGS = (("finished", 85), ("failed", 10), ("canceled", 5))
LOAD_SHAPES = ("tail", "spread")


@dataclass(frozen=True)
class Unfinished:
    """A stored job that has not ended: its id, status (PENDING or RUNNING) and runs."""

    id: str
    status: str
    runs: int


@dataclass(frozen=True)
class Load:
    """What the publisher publishes: ``tail`` (this module) or ``spread`` (the former load, a second plan)."""

    shape: str = "tail"
    plan: Plan | None = None  # the stored data's plan (tail)
    unfinished: Sequence[Unfinished] = field(default_factory=tuple)


def unfinished_jobs(conn: Any, k: int = 200_000) -> list[Unfinished]:
    """The ``k`` most recently created unfinished jobs of the PostgreSQL copy of the data (the same jobs)."""
    rows = conn.execute(
        f"SELECT id, status, runs FROM {pg.TABLE} WHERE status IN ('PENDING', 'RUNNING') "
        "ORDER BY created_at DESC, id LIMIT %s",
        (k,),
    ).fetchall()
    return [Unfinished(str(row[0]), str(row[1]), int(row[2])) for row in rows]


def load_of(shape: str, plan: Plan, conn: Any) -> Load:
    """The load of ``shape`` for the data of ``plan`` (``conn``: PostgreSQL holding the same jobs)."""
    if shape not in LOAD_SHAPES:
        raise ValueError(f"unknown load shape {shape!r} (one of {', '.join(LOAD_SHAPES)})")
    if shape == "spread":
        return Load("spread")
    return Load("tail", plan, unfinished_jobs(conn))


Timed = tuple[int, int, dict[str, str]]  # (occurred_at, generation order, fields)


def tail_events(plan: Plan, unfinished: Sequence[Unfinished], n: int, rate: float, seed: int) -> list[dict[str, str]]:
    """``n`` events (XADD fields) of the tail load over the data of ``plan``, in ``occurred_at`` order."""
    t0 = END_US + US_PER_S  # after every stored job's times
    span = int(n / rate * US_PER_S)
    jobs_per_s = rate * (1 - UPDATE_SHARE) / EVENTS_PER_JOB
    timed: list[Timed] = []
    for attempt in range(5):
        # A short burst sees fewer events per job (lifecycles past its end, large batches still filling):
        # then again, with more jobs per second.
        rng = random.Random(f"jobreg-bench-tail:{plan.seed}:{seed}:{attempt}")
        seq = itertools.count()
        timed = _new_jobs(plan, rng, t0, span, jobs_per_s, seq)
        timed += _updates(unfinished, rng, t0, span, int(n * UPDATE_SHARE), seq)
        if len(timed) >= n:
            break
        jobs_per_s *= 1.2 * n / max(len(timed), 1)
    timed.sort(key=lambda t: (t[0], t[1]))
    return [fields for _, _, fields in timed[:n]]


def _new_jobs(
    plan: Plan, rng: random.Random, t0: int, span: int, jobs_per_s: float, seq: itertools.count[int]
) -> list[Timed]:
    """New batches' jobs created from ``t0`` on (over a little more than ``span``, so the cut to n events
    never runs short), and their lifecycles up to the burst's end."""
    cum = list(itertools.accumulate(b.size for b in plan.batches))
    mean_batch = sum(datagen._batch_size(random.Random(i)) for i in range(2000)) / 2000
    end = t0 + span + span // 2
    out: list[Timed] = []
    t = t0
    while True:
        t += int(rng.expovariate(jobs_per_s / mean_batch) * US_PER_S)
        if t >= end:
            return out
        template = rng.choices(plan.batches, cum_weights=cum)[0]
        project_id, user_id = template.project_id, template.user_id
        if rng.random() < NEW_PROJECT_SHARE:
            project_id, user_id = uuid4_from(rng), rng.choice(plan.users)
        size = datagen._batch_size(rng)
        batch = Batch(t, uuid4_from(rng), project_id, user_id, size, template.origin, template.runs, 40_000)
        created = t
        for _ in range(size):
            if created >= end:
                break
            # horizon: a start or end past the burst is left unpublished (cut below), never clamped onto it
            job = datagen._make_job(rng, batch, created, 0, None, horizon=end + 86_400 * US_PER_S)
            out += [(_at(f), next(seq), f) for f in job_events(job) if _at(f) < end]
            created += 1 + int(rng.expovariate(1 / batch.gap_us))


def _updates(
    unfinished: Sequence[Unfinished], rng: random.Random, t0: int, span: int, n: int, seq: itertools.count[int]
) -> list[Timed]:
    """About ``n`` lifecycle events of stored unfinished jobs (most recent first), spread over the burst."""
    out: list[Timed] = []
    for job in unfinished:
        if len(out) >= n:
            break
        at = t0 + int(rng.random() * span)
        if job.status == "PENDING":
            out.append((at, next(seq), datagen._event(job.id, "started", at)))
            at += int(job.runs * 20_000 * rng.lognormvariate(0, 0.3) + rng.lognormvariate(15.4, 1))
            if at >= t0 + span:
                continue
        kind = rng.choices([k for k, _ in _ENDINGS], weights=[w for _, w in _ENDINGS])[0]
        fields = datagen._event(job.id, kind, at)
        if kind == "failed":
            fields["errors"] = json.dumps(rng.sample(datagen._ERROR_MESSAGES, 1))
        out.append((at, next(seq), fields))
    return out


def _at(fields: dict[str, str]) -> int:
    """An event's occurred_at in microseconds since the epoch."""
    return datagen.us_of(fields["occurred_at"])
