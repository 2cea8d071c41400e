"""Deterministic, streaming generator of realistic jobs (and their wire events) for benchmarks.

Usage::

    plan = make_plan(1_000_000, seed=42)      # cheap: projects, users, batches (no jobs yet)
    info = bench_info(plan)                   # ids the query shapes need
    for chunk in iter_jobs(plan):             # lists of job dicts, in creation order
        for job in chunk:
            events = job_events(job)          # XADD-ready field dicts (all str values)

The same ``(n_jobs, seed)`` always gives the same plan, jobs and events.

Shape of the data:

* Projects are Pareto-skewed: the largest holds half of all jobs, four mid-size ones hold
  about 1,000-1,800 jobs each (the designated one 1,500; scaled down below 90k jobs), many
  tiny ones hold 1..20 jobs (the designated one exactly 20), and the rest follow a Pareto
  law between 30 jobs and ``n_jobs / 12``.
* Batches hold 1..1000 jobs (log-normal, median about 12), all in one project, from one
  user, with one origin and a common ``runs`` value (jobs deviate from it 20% of the time).
  Batch submission times grow linearly over the ~6 months ending 2026-11-01 (usage growth);
  most batches are submitted at once (jobs ~40 ms apart), 10% are "open" batches that
  receive jobs over minutes to hours.
* A few hundred users (300 from 90k jobs up); user popularity is Zipf-like and each project
  has its own small pool of users (the largest project: up to 80).
* Status: ~70% DONE, 8% ERROR (non-empty ``errors``), 5% CANCELED, 2% RUNNING, 15% PENDING,
  drawn per job independently of age. Origin: ~80% CLIENT, 15% AZURE, 4% OVH, 1% UNKNOWN.
* Jobs are yielded in ``created_at`` order (a sweep over overlapping batches), so
  ``creation_order`` (1..N in yield order) increases with ``created_at``.
* Timestamps are int microseconds since the Unix epoch; ``start_timestamp`` is None for
  PENDING jobs (and for some ERROR/CANCELED jobs that never started); ``end_timestamp`` is
  set only for DONE/ERROR/CANCELED; ``updated_at`` is the latest of the job's timestamps;
  ``created_at <= start_timestamp <= end_timestamp <= 2026-11-01`` whenever they are set.
* About 2-3% of jobs are retries: ``parent_id`` points to an earlier ERROR job of the batch.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Job = dict[str, Any]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
US_PER_S = 1_000_000
END_US = (END - EPOCH) // timedelta(microseconds=1)
BEGIN_US = END_US - 183 * 86_400 * US_PER_S
#: Batches are submitted between BEGIN_US and END_US minus one day.
_SUBMIT_SPAN_US = END_US - 86_400 * US_PER_S - BEGIN_US

STATUSES = ("DONE", "ERROR", "CANCELED", "RUNNING", "PENDING")
_STATUS_CUM = (70, 78, 83, 85, 100)
ORIGINS = ("CLIENT", "AZURE", "OVH", "UNKNOWN")
_ORIGIN_CUM = (80, 95, 99, 100)
_RUNS_CHOICES = (1, 10, 50, 100, 200, 250, 500, 1000, 2000)
_RUNS_WEIGHTS = (5, 10, 20, 25, 12, 6, 12, 7, 3)
_ERROR_MESSAGES = (
    "Emulation failed: out of memory (exit code 137)",
    "QPU calibration drift detected, job aborted",
    "Invalid sequence: amplitude on channel 'rydberg_global' exceeds device maximum",
    "Timeout: job exceeded 3600 s of execution",
    "Backend unavailable: connection reset by peer",
    "Register layout not supported by the target device",
    "Internal error: result upload failed",
)
_EVENT_NS = uuid.UUID("6f1c1a52-7f0e-4c8e-9d0a-2b7f5b8c9e10")

MID_PROJECT_SIZE = 1500
TINY_PROJECT_SIZE = 20


@dataclass(frozen=True, slots=True)
class Project:
    """A project: its id, planned job count and its users (first one submits the most)."""

    id: str
    size: int
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Batch:
    """A planned batch: when it is submitted, where it belongs, how many jobs it holds."""

    start_us: int
    id: str
    project_id: str
    user_id: str
    size: int
    origin: str
    runs: int
    gap_us: int  # mean time between two job creations of the batch


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything decided before jobs are generated (a few MB even at 10M jobs)."""

    n_jobs: int
    seed: int
    projects: tuple[Project, ...]  # projects[0] is the largest
    batches: tuple[Batch, ...]  # sorted by start_us
    users: tuple[str, ...]
    mid_project_id: str
    tiny_project_id: str


@dataclass(frozen=True, slots=True)
class BenchInfo:
    """The ids (and sizes) the query shapes need; ``user_window`` holds ISO 8601 strings."""

    n_jobs: int
    largest_project_id: str
    largest_project_size: int
    mid_project_id: str
    mid_project_size: int
    tiny_project_id: str
    tiny_project_size: int
    batch_ids: tuple[str, ...]
    user_id: str
    user_window: tuple[str, str]


def uuid4_from(rng: random.Random) -> str:
    """A random (version 4, variant RFC 4122) lowercase canonical UUID drawn from ``rng``."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def to_datetime(us: int) -> datetime:
    """Microseconds since the epoch -> aware UTC datetime (exact)."""
    return EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """Microseconds since the epoch -> RFC 3339 string with microseconds and ``+00:00``."""
    return to_datetime(us).isoformat(timespec="microseconds")


def us_of(text: str) -> int:
    """An RFC 3339 string from :func:`iso` -> microseconds since the epoch (exact)."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


# --------------------------------------------------------------------------- plan


def _project_sizes(n: int, rng: random.Random) -> tuple[list[int], int, int]:
    """Sizes of all projects; returns (sizes, index of the mid project, index of the tiny one)."""
    mid = min(MID_PROJECT_SIZE, max(40, n // 60))
    sizes = [n // 2, mid, round(mid * 0.8), round(mid * 1.2), round(mid * 0.67)]
    mid_index, tiny_index = 1, len(sizes)
    n_tiny = max(3, n // 2000)
    sizes.append(TINY_PROJECT_SIZE)
    sizes.extend(rng.randint(1, TINY_PROJECT_SIZE) for _ in range(n_tiny - 1))
    rest = n - sum(sizes)
    if rest < 0:
        raise ValueError(f"n_jobs={n} is too small (use at least 1000)")
    cap = max(30, n // 12)
    while rest > 0:
        size = min(int(30 * rng.paretovariate(1.16)), cap, rest)
        if rest - size < 30:
            size = rest
        sizes.append(size)
        rest -= size
    return sizes, mid_index, tiny_index


def _batch_size(rng: random.Random) -> int:
    return max(1, min(1000, int(rng.lognormvariate(2.5, 1.5))))


def make_plan(n_jobs: int = 1_000_000, seed: int = 42) -> Plan:
    """Decide projects, users and batches for ``n_jobs`` jobs (deterministic in ``seed``)."""
    rng = random.Random(f"jobreg-bench-plan:{seed}")
    sizes, mid_index, tiny_index = _project_sizes(n_jobs, rng)
    n_users = min(300, max(5, n_jobs // 300))
    users = tuple(f"auth0|{rng.getrandbits(96):024x}" for _ in range(n_users))
    popularity = [1 / (i + 1) ** 0.8 for i in range(n_users)]

    projects: list[Project] = []
    for index, size in enumerate(sizes):
        if index == 0:
            wanted = 80
        elif size <= TINY_PROJECT_SIZE:
            wanted = rng.randint(1, 2)
        else:
            wanted = min(20, int(rng.paretovariate(1.2)))
        pool = dict.fromkeys(rng.choices(users, weights=popularity, k=min(wanted, n_users)))
        projects.append(Project(uuid4_from(rng), size, tuple(pool)))

    batches: list[Batch] = []
    for project in projects:
        user_weights = [1 / (k + 1) for k in range(len(project.users))]
        left = project.size
        while left:
            size = min(left, _batch_size(rng))
            left -= size
            start = BEGIN_US + int(_SUBMIT_SPAN_US * math.sqrt(rng.random()))
            if rng.random() < 0.9:
                gap = 40_000
            else:
                room = max(1, (END_US - 3600 * US_PER_S - start) // (2 * size))
                gap = min(int(rng.uniform(1, 1200) * US_PER_S), room)
            batches.append(
                Batch(
                    start_us=start,
                    id=uuid4_from(rng),
                    project_id=project.id,
                    user_id=rng.choices(project.users, weights=user_weights)[0],
                    size=size,
                    origin=ORIGINS[_pick(rng, _ORIGIN_CUM)],
                    runs=rng.choices(_RUNS_CHOICES, weights=_RUNS_WEIGHTS)[0],
                    gap_us=gap,
                )
            )
    batches.sort(key=lambda b: b.start_us)
    return Plan(
        n_jobs=n_jobs,
        seed=seed,
        projects=tuple(projects),
        batches=tuple(batches),
        users=users,
        mid_project_id=projects[mid_index].id,
        tiny_project_id=projects[tiny_index].id,
    )


def _pick(rng: random.Random, cum: tuple[int, ...]) -> int:
    x = rng.random() * cum[-1]
    for i, c in enumerate(cum):
        if x < c:
            return i
    return len(cum) - 1


# --------------------------------------------------------------------------- helpers


def largest_project(plan: Plan) -> Project:
    """The project holding about half of all jobs."""
    return plan.projects[0]


def mid_project(plan: Plan) -> Project:
    """A mid-size project (1,500 jobs from 90k jobs up)."""
    return next(p for p in plan.projects if p.id == plan.mid_project_id)


def tiny_project(plan: Plan) -> Project:
    """A tiny project (exactly 20 jobs)."""
    return next(p for p in plan.projects if p.id == plan.tiny_project_id)


def sample_batch_ids(plan: Plan, k: int = 5) -> tuple[str, ...]:
    """``k`` batches of the largest project with >= 50 jobs, spread over time."""
    largest = plan.projects[0].id
    pool = [b for b in plan.batches if b.project_id == largest and b.size >= 50]
    if len(pool) < k:
        pool = sorted(plan.batches, key=lambda b: -b.size)[: 4 * k]
        pool.sort(key=lambda b: b.start_us)
    return tuple(pool[len(pool) * (2 * i + 1) // (2 * k)].id for i in range(k))


def user_window(plan: Plan) -> tuple[str, tuple[int, int]]:
    """The user with the most jobs and a 2-day window (µs) around one of their batches."""
    jobs_per_user = Counter[str]()
    for b in plan.batches:
        jobs_per_user[b.user_id] += b.size
    user = jobs_per_user.most_common(1)[0][0]
    theirs = [b for b in plan.batches if b.user_id == user and b.size >= 5] or [
        b for b in plan.batches if b.user_id == user
    ]
    start = theirs[len(theirs) // 2].start_us - 3600 * US_PER_S
    return user, (start, start + 2 * 86_400 * US_PER_S)


def bench_info(plan: Plan) -> BenchInfo:
    """All ids the query shapes need, computed from the plan (no job generation)."""
    largest, mid, tiny = largest_project(plan), mid_project(plan), tiny_project(plan)
    user, (w_start, w_end) = user_window(plan)
    return BenchInfo(
        n_jobs=plan.n_jobs,
        largest_project_id=largest.id,
        largest_project_size=largest.size,
        mid_project_id=mid.id,
        mid_project_size=mid.size,
        tiny_project_id=tiny.id,
        tiny_project_size=tiny.size,
        batch_ids=sample_batch_ids(plan),
        user_id=user,
        user_window=(iso(w_start), iso(w_end)),
    )


# --------------------------------------------------------------------------- jobs


def iter_jobs(plan: Plan, chunk_size: int = 10_000) -> Iterator[list[Job]]:
    """Yield all jobs of ``plan`` in ``created_at`` order, as lists of at most ``chunk_size``.

    Only the batches being filled at a given instant are held, so memory stays flat.
    """
    rng = random.Random(f"jobreg-bench-jobs:{plan.seed}")
    batches = plan.batches
    left = [b.size for b in batches]
    failed: dict[int, str] = {}  # batch index -> id of an ERROR job not yet retried
    heap: list[tuple[int, int]] = []  # (next created_at, batch index)
    chunk: list[Job] = []
    order = 0
    next_batch = 0
    while heap or next_batch < len(batches):
        if next_batch < len(batches) and (not heap or batches[next_batch].start_us <= heap[0][0]):
            heapq.heappush(heap, (batches[next_batch].start_us, next_batch))
            next_batch += 1
            continue
        created, i = heapq.heappop(heap)
        batch = batches[i]
        order += 1
        parent = failed.pop(i) if i in failed else None  # only the next job may retry it
        if parent is not None and rng.random() >= 0.35:
            parent = None
        job = _make_job(rng, batch, created, order, parent)
        if job["status"] == "ERROR":
            failed[i] = job["id"]
        chunk.append(job)
        left[i] -= 1
        if left[i]:
            gap = 1 + int(rng.expovariate(1 / batch.gap_us))
            heapq.heappush(heap, (min(created + gap, END_US - 1), i))
        else:
            failed.pop(i, None)
        if len(chunk) >= chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _make_job(rng: random.Random, b: Batch, created: int, order: int, parent: str | None, horizon: int = END_US) -> Job:
    """One job of batch ``b`` created at ``created``; its start and end never pass ``horizon`` (the
    stored data's end; a later one for jobs generated past it, tests/benchmarks/tailload.py)."""
    status = STATUSES[_pick(rng, _STATUS_CUM)]
    runs = b.runs
    if rng.random() < 0.2:
        runs = max(1, min(2000, int(runs * rng.lognormvariate(0, 0.6)) + 1))
    variables = None
    if rng.random() < 0.65:
        variables = {
            "Omega_max": round(rng.uniform(1.0, 15.7), 3),
            "duration": rng.choice((500, 1000, 2000, 4000)),
        }
    # Durations in µs: queueing (median ~15 s, long tail) then execution (grows with runs).
    start: int | None = None
    end: int | None = None
    never_started = status == "PENDING" or (
        status in ("ERROR", "CANCELED") and rng.random() < (0.25 if status == "ERROR" else 0.4)
    )
    if not never_started:
        start = min(created + int(rng.lognormvariate(16.5, 1.5)), horizon)
    if status in ("DONE", "ERROR", "CANCELED"):
        if start is None:
            end = created + int(rng.lognormvariate(17.0, 2.0))
        else:
            run_us = int(runs * 20_000 * rng.lognormvariate(0, 0.3) + rng.lognormvariate(15.4, 1))
            end = start + (run_us if status == "DONE" else int(run_us * rng.random()))
        end = min(end, horizon)
    errors: list[str] = []
    if status == "ERROR":
        errors = rng.sample(_ERROR_MESSAGES, rng.choice((1, 1, 1, 2, 3)))
    return {
        "id": uuid4_from(rng),
        "parent_id": parent,
        "batch_id": b.id,
        "project_id": b.project_id,
        "user_id": b.user_id,
        "status": status,
        "runs": runs,
        "origin": b.origin,
        "errors": errors,
        "variables": variables,
        "creation_order": order,
        "created_at": created,
        "updated_at": max(created, start or 0, end or 0),
        "start_timestamp": start,
        "end_timestamp": end,
    }


# --------------------------------------------------------------------------- events

_TERMINAL_EVENT = {"DONE": "finished", "ERROR": "failed", "CANCELED": "canceled"}


def _event(job_id: str, kind: str, at_us: int) -> dict[str, str]:
    return {
        "event_id": str(uuid.uuid5(_EVENT_NS, f"{job_id}:{kind}")),
        "type": kind,
        "job_id": job_id,
        "occurred_at": iso(at_us),
    }


def job_events(job: Job) -> list[dict[str, str]]:
    """The wire events (CONTRACT.md section 1) whose fold is ``job`` (except creation_order).

    ``created``, then ``started`` if the job started, then ``canceling`` (for about 60% of
    CANCELED jobs, 1 s before the end or at the start), then the terminal event. Event ids are
    uuid5 of (job id, type), so publishing the same job twice republishes the same events.
    """
    job_id: str = job["id"]
    created = _event(job_id, "created", job["created_at"])
    created.update(
        batch_id=job["batch_id"],
        project_id=job["project_id"],
        user_id=job["user_id"],
        runs=str(job["runs"]),
        origin=job["origin"],
    )
    if job["parent_id"] is not None:
        created["parent_id"] = job["parent_id"]
    if job["variables"] is not None:
        created["variables"] = json.dumps(job["variables"], separators=(",", ":"))
    events = [created]
    start, end = job["start_timestamp"], job["end_timestamp"]
    if start is not None:
        events.append(_event(job_id, "started", start))
    status = job["status"]
    if status == "CANCELED" and int(job_id[-2:], 16) < 154:  # ~60%, deterministic per job
        assert end is not None
        events.append(_event(job_id, "canceling", max(start or job["created_at"], end - US_PER_S)))
    if status in _TERMINAL_EVENT:
        assert end is not None
        terminal = _event(job_id, _TERMINAL_EVENT[status], end)
        if job["errors"]:
            terminal["errors"] = json.dumps(job["errors"])
        events.append(terminal)
    return events
