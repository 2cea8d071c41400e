"""A seeded random workload over the whole GET /api/v2/jobs grammar, values drawn from the data.

Usage::

    queries = workload(plan, job_ids, n=300, seed=1)   # [(label, params)], same seed -> same list
    python -m tests.benchmarks.workload --jobs 100000 --seed 1 -n 20   # print them as query strings

Each query combines a scope (none; a tiny, mid-size or huge project; 1-5 batches; 1-3 users;
1-5 job ids; an id prefix of 1-4 hex digits; a project and one of its users) with optional
filters (any non-empty set of statuses or origins, a runs range, errors, a start/end date
range), any order key in either direction, a limit of 1-100 and an offset of 0-100,000.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from tests.benchmarks.datagen import _RUNS_CHOICES, BEGIN_US, END_US, ORIGINS, Plan, iso, make_plan

Params = list[tuple[str, str]]
Query = tuple[str, Params]

ALL_STATUSES = ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED", "CANCELING")
ORDER_KEYS = ("created_at", "updated_at", "creation_order", "start_timestamp", "end_timestamp", "runs", "id")


def _project(plan: Plan, rng: random.Random) -> str:
    """A project from one size class, so tiny, mid-size and the huge one all come up."""
    size_class = rng.choices(("huge", "large", "mid", "small", "tiny"), weights=(3, 2, 2, 2, 2))[0]
    projects = plan.projects
    if size_class == "huge":
        return projects[0].id
    bounds = {"large": (5000, 10**12), "mid": (500, 5000), "small": (21, 500), "tiny": (1, 20)}[size_class]
    pool = [p for p in projects[1:] if bounds[0] <= p.size < bounds[1]] or list(projects[1:])
    return rng.choice(pool).id


def _scope(plan: Plan, job_ids: Sequence[str], rng: random.Random) -> tuple[str, Params]:
    kind = rng.choices(
        ("none", "project", "batches", "users", "ids", "prefix", "project+user"), weights=(3, 6, 3, 2, 1, 2, 1)
    )[0]
    if kind == "project":
        return kind, [("project_id", _project(plan, rng))]
    if kind == "batches":
        return kind, [("batch_id", b.id) for b in rng.sample(plan.batches, rng.randint(1, 5))]
    if kind == "users":
        return kind, [("user_id", u) for u in rng.sample(plan.users, rng.randint(1, min(3, len(plan.users))))]
    if kind == "ids":
        return kind, [("id", i) for i in rng.sample(list(job_ids), rng.randint(1, 5))]
    if kind == "prefix":
        return kind, [("id__starts_with", f"{rng.getrandbits(16):04x}"[: rng.randint(1, 4)])]
    if kind == "project+user":
        project = rng.choice([p for p in plan.projects if p.size >= 100] or plan.projects)
        return kind, [("project_id", project.id), ("user_id", rng.choice(project.users))]
    return kind, []


def _subset(values: Sequence[str], rng: random.Random) -> list[str]:
    return rng.sample(list(values), rng.randint(1, len(values) - 1))


def _filters(rng: random.Random) -> tuple[list[str], Params]:
    names: list[str] = []
    params: Params = []

    def maybe(name: str, p: float, make: Callable[[], Params]) -> None:
        if rng.random() < p:
            names.append(name)
            params.extend(make())

    maybe("status", 0.45, lambda: [("status", s) for s in _subset(ALL_STATUSES, rng)])
    maybe("origin", 0.25, lambda: [("origin", o) for o in _subset(ORIGINS, rng)])

    def runs() -> Params:
        low, high = sorted(rng.sample(_RUNS_CHOICES, 2))
        which = rng.choice(("min", "max", "both"))
        return ([("min_runs", str(low))] if which != "max" else []) + (
            [("max_runs", str(high))] if which != "min" else []
        )

    maybe("runs", 0.15, runs)
    maybe("errors", 0.12, lambda: [("errors", rng.choice(("true", "false")))])

    def dates() -> Params:
        start = rng.randint(BEGIN_US, END_US)
        span = int(86_400e6 * 10 ** rng.uniform(-1.5, 2))  # 45 minutes to 100 days
        which = rng.choice(("start", "end", "both"))
        return ([("start_date", iso(start))] if which != "end" else []) + (
            [("end_date", iso(min(start + span, END_US)))] if which != "start" else []
        )

    maybe("dates", 0.2, dates)
    return names, params


def _page(rng: random.Random) -> Params:
    limit = 100 if rng.random() < 0.4 else rng.randint(1, 100)
    roll = rng.random()
    if roll < 0.5:
        offset = 0
    elif roll < 0.8:
        offset = rng.randint(1, 1000)
    else:
        offset = int(10 ** rng.uniform(3, 5))
    return [
        ("order_by", rng.choice(ORDER_KEYS)),
        ("order_by_direction", rng.choice(("ASC", "DESC"))),
        ("limit", str(limit)),
        ("offset", str(offset)),
    ]


def workload(plan: Plan, job_ids: Sequence[str], n: int = 300, seed: int = 1) -> list[Query]:
    """``n`` queries ``(label, params)``; the label names the scope and filters used."""
    rng = random.Random(f"jobreg-bench-workload:{seed}")
    queries: list[Query] = []
    for i in range(n):
        scope, scope_params = _scope(plan, job_ids, rng)
        names, filter_params = _filters(rng)
        page = _page(rng)
        label = f"{i:03d} {'+'.join([scope, *names])} by {page[0][1]} {page[1][1]}"
        queries.append((label, [*scope_params, *filter_params, *page]))
    return queries


def query_string(params: Params) -> str:
    return urlencode(params)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args(argv)
    plan = make_plan(args.jobs, args.data_seed)
    # Without the loaded data, id lists use made-up ids (they then match nothing).
    fake_ids = [f"{random.Random(i).getrandbits(128):032x}" for i in range(20)]
    ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in fake_ids]
    for label, params in workload(plan, ids, args.n, args.seed):
        print(f"{label}\n    /api/v2/jobs?{query_string(params)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
