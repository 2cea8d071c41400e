"""Whether one job satisfies a JobQuery's filters, evaluated in memory (the watch stream's filter)."""

from __future__ import annotations

from registry.domain.model import JobState
from registry.query.planner import prefix_range
from registry.query.spec import JobQuery


def has_filters(query: JobQuery) -> bool:
    return any(
        value is not None
        for value in (
            query.ids,
            query.id_prefix,
            query.batch_ids,
            query.project_ids,
            query.user_ids,
            query.statuses,
            query.min_runs,
            query.max_runs,
            query.errors,
            query.origins,
            query.start_date,
            query.end_date,
        )
    )


def matches(state: JobState, query: JobQuery) -> bool:
    """True when the job is listed and passes every filter of ``query`` (ordering and paging ignored).

    Same semantics as GET /api/v2/jobs: lists mean any of, filters are AND-ed, a job never
    started (ended) fails ``start_date`` (``end_date``).
    """
    c = state.created
    if c is None or not state.listed:
        return False
    t = state.terminal
    if query.ids is not None and state.job_id not in query.ids:
        return False
    if query.id_prefix:
        prefix = query.id_prefix.lower()
        if prefix_range(prefix) is None or not state.job_id.startswith(prefix):
            return False
    if query.batch_ids is not None and c.batch_id not in query.batch_ids:
        return False
    if query.project_ids is not None and c.project_id not in query.project_ids:
        return False
    if query.user_ids is not None and c.user_id not in query.user_ids:
        return False
    if query.statuses is not None and state.status not in query.statuses:
        return False
    if query.origins is not None and c.origin not in query.origins:
        return False
    if query.min_runs is not None and c.runs < query.min_runs:
        return False
    if query.max_runs is not None and c.runs > query.max_runs:
        return False
    if query.errors is not None and bool(t and t.errors) != query.errors:
        return False
    if query.start_date is not None and (state.start_timestamp is None or state.start_timestamp < query.start_date):
        return False
    end = t.occurred_at if t else None
    return query.end_date is None or (end is not None and end <= query.end_date)
