"""Whether one job satisfies a JobQuery's filters, evaluated in memory (the watch stream's filter)."""

from __future__ import annotations

from registry.domain.model import JobState
from registry.query.params import FILTERS
from registry.query.spec import JobQuery


def has_filters(query: JobQuery) -> bool:
    return any(getattr(query, p.field) is not None for p in FILTERS)


def matches(state: JobState, query: JobQuery) -> bool:
    """True when the job is listed and passes every filter of ``query`` (ordering and paging ignored).

    Same semantics as GET /api/v2/jobs: lists mean any of, filters are AND-ed, a job never
    started (ended) fails ``start_date`` (``end_date``). Each filter's test is declared
    beside its parameter, in registry.query.params.
    """
    if state.created is None or not state.listed:
        return False
    for param in FILTERS:
        value = getattr(query, param.field)
        if value is not None and param.matches is not None and not param.matches(state, value):
            return False
    return True
