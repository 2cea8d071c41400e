"""The pure fold of lifecycle events into a job (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from registry.domain.model import (
    STATUS_OF,
    TERMINAL_EVENTS,
    Created,
    Event,
    EventType,
    Job,
    JobDetail,
    JobState,
    LinkedJob,
    Terminal,
    render_timestamp,
)


def _min(a: int | None, b: int) -> int:
    return b if a is None or b < a else a


def merge(state: JobState, event: Event) -> JobState:
    """Add one event to a job's state. Commutative and idempotent, so order and redelivery don't matter."""
    assert event.job_id == state.job_id
    created, started, canceling, terminal = (
        state.created,
        state.start_timestamp,
        state.canceling,
        state.terminal,
    )
    if event.type is EventType.CREATED:
        candidate = Created(
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            batch_id=event.batch_id or "",
            project_id=event.project_id or "",
            user_id=event.user_id or "",
            runs=event.runs or 0,
            origin=event.origin,
            parent_id=event.parent_id,
            variables=event.variables,
            sequence=event.sequence,
        )
        # Several `created` events for one job: the earliest (then smallest id) wins.
        if created is None or (candidate.occurred_at, candidate.event_id) < (
            created.occurred_at,
            created.event_id,
        ):
            created = candidate
    elif event.type is EventType.STARTED:
        started = _min(started, event.occurred_at)
    elif event.type is EventType.CANCELING:
        canceling = True
    elif event.type in TERMINAL_EVENTS:
        candidate_t = Terminal(
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            status=STATUS_OF[event.type],
            errors=event.errors,
            results_link=event.results_link,
        )
        if terminal is None or (candidate_t.occurred_at, candidate_t.event_id) < (
            terminal.occurred_at,
            terminal.event_id,
        ):
            terminal = candidate_t
    updated = state.updated_at
    if updated is None or event.occurred_at > updated:
        updated = event.occurred_at
    return JobState(
        job_id=state.job_id,
        created=created,
        start_timestamp=started,
        canceling=canceling,
        terminal=terminal,
        updated_at=updated,
    )


def fold(job_id: str, events: Iterable[Event], state: JobState | None = None) -> JobState:
    """The job's state after all ``events`` (starting from ``state`` if given)."""
    current = state if state is not None else JobState(job_id=job_id)
    for event in events:
        current = merge(current, event)
    return current


def to_job(state: JobState, creation_order: int) -> Job | None:
    """The public job, or None while its `created` event has not arrived."""
    c = state.created
    if c is None or not state.listed:
        return None
    t = state.terminal
    return Job(
        id=state.job_id,
        parent_id=c.parent_id,
        batch_id=c.batch_id,
        project_id=c.project_id,
        user_id=c.user_id,
        status=state.status,
        runs=c.runs,
        origin=c.origin,
        errors=list(t.errors) if t else [],
        variables=c.variables,
        creation_order=creation_order,
        created_at=render_timestamp(c.occurred_at) or "",
        updated_at=render_timestamp(state.updated_at) or "",
        start_timestamp=render_timestamp(state.start_timestamp),
        end_timestamp=render_timestamp(t.occurred_at if t else None),
    )


def to_linked(state: JobState, creation_order: int) -> LinkedJob | None:
    """The public job plus its results link (the watch stream's shape)."""
    job = to_job(state, creation_order)
    if job is None:
        return None
    t = state.terminal
    return LinkedJob(**msgspec.structs.asdict(job), results_link=t.results_link if t else None)


def to_detail(state: JobState, creation_order: int) -> JobDetail | None:
    """One job in full: the public job, its results link and its sequence (GET /api/v2/jobs/{id})."""
    job = to_linked(state, creation_order)
    if job is None or state.created is None:
        return None
    return JobDetail(**msgspec.structs.asdict(job), sequence=state.created.sequence)
