"""Pure-Python ground truth for GET /api/v2/jobs over generated jobs (one streaming pass).

Usage::

    expected = evaluate(iter_jobs(plan), shapes(bench_info(plan)))
    total, ids = expected["03 status=DONE"]

Each query keeps a bounded heap of its first ``offset + limit`` jobs, so memory is
O(sum of offset + limit) whatever the number of jobs. Semantics follow CONTRACT.md section 3:
filters AND-ed, lists mean "any of", order by (key, id) in the requested direction, nulls last.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from tests.benchmarks.datagen import EPOCH, Job

Params = Sequence[tuple[str, str]]
Predicate = Callable[[Job], bool]


def _us(value: str) -> int:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def matcher(params: Params) -> Predicate:
    """A predicate telling whether a job matches the query's filters."""
    lists: dict[str, set[str]] = {}
    scalars: dict[str, str] = {}
    for name, value in params:
        if name in ("id", "batch_id", "project_id", "user_id", "status", "origin"):
            is_uuid = name in ("id", "batch_id", "project_id")
            lists.setdefault(name, set()).add(value.lower() if is_uuid else value)
        else:
            scalars[name] = value
    tests: list[Predicate] = [lambda j, f=f, s=s: j[f] in s for f, s in lists.items()]
    if "id__starts_with" in scalars:
        prefix = scalars["id__starts_with"].lower()
        tests.append(lambda j: j["id"].startswith(prefix))
    if "min_runs" in scalars:
        lo = int(scalars["min_runs"])
        tests.append(lambda j: j["runs"] >= lo)
    if "max_runs" in scalars:
        hi = int(scalars["max_runs"])
        tests.append(lambda j: j["runs"] <= hi)
    if "errors" in scalars:
        want = scalars["errors"].lower() in ("true", "1")
        tests.append(lambda j: bool(j["errors"]) == want)
    if "start_date" in scalars:
        since = _us(scalars["start_date"])
        tests.append(lambda j: j["start_timestamp"] is not None and j["start_timestamp"] >= since)
    if "end_date" in scalars:
        until = _us(scalars["end_date"])
        tests.append(lambda j: j["end_timestamp"] is not None and j["end_timestamp"] <= until)
    return lambda job: all(test(job) for test in tests)


def sort_key(params: Params) -> Callable[[Job], tuple[int, int, int]]:
    """A numeric key giving the API order ascending: (null last flag, key, id), signs flipped
    for DESC."""
    values = dict(params)
    key = values.get("order_by", "created_at")
    sign = -1 if values.get("order_by_direction", "DESC").upper() == "DESC" else 1

    def by(job: Job) -> tuple[int, int, int]:
        ident = int(job["id"].replace("-", ""), 16)
        value = ident if key == "id" else job[key]
        if value is None:
            return (1, 0, sign * ident)
        return (0, sign * value, sign * ident)

    return by


class _Query:
    def __init__(self, params: Params) -> None:
        values = dict(params)
        self.keep = int(values.get("offset", "0")) + int(values.get("limit", "100"))
        self.offset = int(values.get("offset", "0"))
        self.match = matcher(params)
        self.key = sort_key(params)
        self.total = 0
        self.heap: list[tuple[tuple[int, int, int], str]] = []  # max-heap via negated keys

    def feed(self, job: Job) -> None:
        if not self.match(job):
            return
        self.total += 1
        a, b, c = self.key(job)
        item = ((-a, -b, -c), job["id"])
        if len(self.heap) < self.keep:
            heapq.heappush(self.heap, item)
        elif item > self.heap[0]:
            heapq.heapreplace(self.heap, item)

    def result(self) -> tuple[int, list[str]]:
        ordered = [job_id for _, job_id in sorted(self.heap, reverse=True)]
        return self.total, ordered[self.offset :]


def evaluate(chunks: Iterable[list[Job]], queries: Sequence[tuple[str, Params]]) -> dict[str, tuple[int, list[str]]]:
    """``{name: (total, ids of the page)}`` for each named query, in one pass over ``chunks``."""
    states = [(name, _Query(params)) for name, params in queries]
    feeders = [state.feed for _, state in states]
    for chunk in chunks:
        for job in chunk:
            for feed in feeders:
                feed(job)
    return {name: state.result() for name, state in states}


def first_mismatch(expected: tuple[int, list[str]], actual: tuple[int, list[str]]) -> Any:
    """None if equal, else a short description of the first difference."""
    if expected[0] != actual[0]:
        return f"total {actual[0]} != expected {expected[0]}"
    for i, (e, a) in enumerate(zip(expected[1], actual[1], strict=False)):
        if e != a:
            return f"page[{i}] {a} != expected {e}"
    if len(expected[1]) != len(actual[1]):
        return f"page length {len(actual[1])} != expected {len(expected[1])}"
    return None
