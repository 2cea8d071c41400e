"""Who is asking and what they may see: the Principal and the pure scoping of queries to their projects."""

from __future__ import annotations

import enum

import msgspec

from registry.query.spec import JobQuery


class Role(enum.StrEnum):
    USER = "user"  # sees the jobs of their own projects
    ADMIN = "admin"  # an operator: sees everything


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller. ``projects`` are lowercase canonical UUIDs."""

    user_id: str
    projects: frozenset[str] = frozenset()
    role: Role = Role.USER
    expires_at: int | None = None  # token expiry (s since the epoch); long-lived streams end there

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# The caller when the API runs without authentication (`--no-auth`, `jobreg up`): everyone is an
# operator, so scoping changes nothing.
UNAUTHENTICATED = Principal(user_id="", role=Role.ADMIN)


def can_see(principal: Principal, project_id: str) -> bool:
    """Whether a job of ``project_id`` (canonical lowercase) is visible to ``principal``."""
    return principal.is_admin or project_id in principal.projects


def scope(query: JobQuery, principal: Principal) -> JobQuery:
    """Restrict a query to the principal's projects; admins get it unchanged.

    A ``project_id`` filter is intersected with the user's projects, keeping the caller's
    order; an empty intersection gives the query an empty project list, which the planner
    answers with an empty page and a total of 0 -- the same answer as for a project that has
    no jobs, so nothing reveals whether someone else's project exists.
    """
    if principal.is_admin:
        return query
    if query.project_ids is None:
        allowed = tuple(sorted(principal.projects))
    else:
        allowed = tuple(p for p in dict.fromkeys(query.project_ids) if p in principal.projects)
    return msgspec.structs.replace(query, project_ids=allowed)
