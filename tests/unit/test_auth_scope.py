"""Scoping queries to a principal's projects: pure properties of the auth scope and the planner's empty case."""

from __future__ import annotations

import uuid

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from registry.auth.principal import UNAUTHENTICATED, Principal, Role, can_see, scope
from registry.auth.tokens import parse_ttl
from registry.keys import Keys
from registry.query.planner import Members, plan, prune
from registry.query.spec import JobQuery

POOL = [str(uuid.UUID(int=i + 1, version=4)) for i in range(12)]
projects = st.lists(st.sampled_from(POOL), max_size=8)
principals = st.builds(
    Principal,
    user_id=st.text(min_size=1, max_size=8),
    projects=projects.map(frozenset),
    role=st.sampled_from(Role),
)
queries = st.builds(
    JobQuery,
    project_ids=st.none() | projects.map(tuple),
    statuses=st.none(),
    limit=st.integers(1, 100),
    offset=st.integers(0, 1000),
)


def passes(query: JobQuery, project_id: str) -> bool:
    return query.project_ids is None or project_id in query.project_ids


@given(query=queries, principal=principals, job_project=st.sampled_from(POOL))
def test_scoped_query_admits_exactly_the_visible_jobs_the_query_admits(
    query: JobQuery, principal: Principal, job_project: str
) -> None:
    scoped = scope(query, principal)
    assert passes(scoped, job_project) == (passes(query, job_project) and can_see(principal, job_project))


@given(query=queries, principal=principals)
def test_scope_changes_only_the_project_filter(query: JobQuery, principal: Principal) -> None:
    scoped = scope(query, principal)
    if principal.role is Role.ADMIN:
        assert scoped == query
        return
    assert scoped.project_ids is not None
    assert set(scoped.project_ids) <= principal.projects
    assert len(set(scoped.project_ids)) == len(scoped.project_ids)
    assert msgspec.structs.replace(scoped, project_ids=query.project_ids) == query
    # Nothing visible: the planner answers without a single Redis call.
    assert plan(scoped, Keys("t")).empty == (not scoped.project_ids)


def test_outside_project_gives_an_empty_plan_not_an_error() -> None:
    mine, theirs = POOL[0], POOL[1]
    user = Principal(user_id="u", projects=frozenset({mine}))
    scoped = scope(JobQuery(project_ids=(theirs,)), user)
    assert scoped.project_ids == ()
    assert plan(scoped, Keys("t")).empty
    assert scope(JobQuery(project_ids=(theirs, mine, mine)), user).project_ids == (mine,)
    assert scope(JobQuery(), Principal(user_id="nobody")).project_ids == ()


def test_unauthenticated_is_an_operator() -> None:
    q = JobQuery(project_ids=(POOL[3],))
    assert scope(q, UNAUTHENTICATED) is q
    assert can_see(UNAUTHENTICATED, POOL[5])


def test_empty_list_filters_plan_empty() -> None:
    keys = Keys("t")
    for field in ("ids", "batch_ids", "project_ids", "user_ids", "statuses", "origins"):
        assert plan(JobQuery(**{field: ()}), keys).empty, field
    assert not plan(JobQuery(project_ids=(POOL[0],)), keys).empty


def test_parse_ttl() -> None:
    assert [parse_ttl(t) for t in ("90", "90s", "30m", "12h", "7d")] == [90, 90, 1800, 43200, 604800]
    for bad in ("", "0", "-5", "1.5h", "h", "10w", "ten"):
        try:
            parse_ttl(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_prune_drops_values_without_jobs() -> None:
    keys = Keys("t")
    mine, empty, gone = POOL[:3]
    p = plan(JobQuery(project_ids=(mine, empty, gone), statuses=()), keys)
    assert p.empty  # an empty status list already decides it
    p = plan(JobQuery(project_ids=(mine, empty, gone)), keys)
    sizes: dict[str, int | None] = {keys.member_set("project", v): 0 for v in (mine, empty, gone)}
    sizes |= {keys.member_bitmap("project", v): 0 for v in (mine, empty, gone)}
    assert prune(p, sizes).empty  # no value indexes any job
    sizes[keys.member_set("project", mine)] = 3
    pruned = prune(p, sizes)
    assert not pruned.empty
    (members,) = pruned.predicates
    assert isinstance(members, Members)
    assert members.sets == (keys.member_set("project", mine),)
    assert members.bitmaps == (keys.member_bitmap("project", mine),)
