"""matches(job, query), the watch stream's in-memory filter, agrees with the reference's query semantics."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict

import pytest

from api.params import parse_query
from registry.domain.fold import fold
from registry.domain.model import Event, JobState
from registry.errors import InvalidEvent
from registry.query.match import has_filters, matches
from registry.query.spec import JobQuery
from registry.wire.events import decode_event
from tests.reference import Reference, make_traffic, random_query


def states_of(traffic: list[dict[str, str]]) -> dict[str, JobState]:
    by_job: dict[str, list[Event]] = defaultdict(list)
    for fields in traffic:
        with contextlib.suppress(InvalidEvent):
            event = decode_event(fields)
            by_job[event.job_id].append(event)
    return {job_id: fold(job_id, events) for job_id, events in by_job.items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_matches_agrees_with_reference_queries(seed: int) -> None:
    rng = random.Random(seed)
    traffic = make_traffic(rng, 250)
    # Jobs whose `created` has not arrived: they have a state but are never matched.
    for i in range(5):
        orphan = f"0f0f0f0f-0000-4000-8000-{i:012d}"
        traffic.append({"event_id": f"o{i}", "type": "started", "job_id": orphan, "occurred_at": "2026-01-05T09:00:00"})
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    states = states_of(traffic)
    listed = set(ref.jobs())
    assert listed < set(states)  # some jobs have events but no `created` yet: never matched
    for _ in range(200):
        params = random_query(rng, ref)
        query = parse_query(params)
        # The reference's full result set: every match, whatever the page asked for.
        _, want = ref.query([*params, ("offset", "0"), ("limit", str(len(states) + 1))], {})
        got = {job_id for job_id, state in states.items() if matches(state, query)}
        assert got == set(want), params


def test_unlisted_jobs_never_match() -> None:
    state = JobState(job_id="0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59", start_timestamp=1, updated_at=1)
    assert not matches(state, JobQuery())


def test_has_filters_ignores_ordering_and_paging() -> None:
    assert not has_filters(parse_query([("order_by", "runs"), ("limit", "5"), ("offset", "3")]))
    assert has_filters(parse_query([("errors", "false")]))
    assert has_filters(parse_query([("min_runs", "0")]))
