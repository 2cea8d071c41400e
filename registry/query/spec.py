"""The typed job query: every filter, ordering and pagination option of GET /api/v2/jobs."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from registry.domain.model import Origin, Status


class OrderBy(enum.StrEnum):
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    CREATION_ORDER = "creation_order"
    START_TIMESTAMP = "start_timestamp"
    END_TIMESTAMP = "end_timestamp"
    RUNS = "runs"
    ID = "id"


class Direction(enum.StrEnum):
    ASC = "ASC"
    DESC = "DESC"


MAX_LIMIT = 100
MAX_LIST = 100


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    """A validated query. ``None`` means "no filter"; timestamps are µs since the epoch."""

    order_by: OrderBy = OrderBy.CREATED_AT
    direction: Direction = Direction.DESC
    limit: int = MAX_LIMIT
    offset: int = 0
    ids: tuple[str, ...] | None = None
    id_prefix: str | None = None
    batch_ids: tuple[str, ...] | None = None
    project_ids: tuple[str, ...] | None = None
    user_ids: tuple[str, ...] | None = None
    statuses: tuple[Status, ...] | None = None
    min_runs: int | None = None
    max_runs: int | None = None
    errors: bool | None = None
    origins: tuple[Origin, ...] | None = None
    start_date: int | None = None
    end_date: int | None = None
    # Opaque: resumes after the last row of an earlier page (registry/query/page_token.py).
    page_token: str | None = None


class Page(msgspec.Struct, kw_only=True):
    """Result of a query: the exact total and the handles/ids of the requested page, in order."""

    total: int
    job_ids: list[str]
    # How the executor answered, e.g. "candidates: project (1500 jobs), checked in 1 call";
    # the API returns it in the X-Jobreg-Plan header, so a slow query explains itself.
    strategy: str = ""
    # The change log's position (ms, seq), read at or before the page's first read: a watch
    # from it misses no change the page does not show. None for a plan that can never match.
    position: tuple[int, int] | None = None
    # The page's job records as flat (handle, state) pairs, when the call that found the page
    # read them too (PAGE, PICK); None when they are still to be read.
    records: list[Any] | None = None


class Counts(msgspec.Struct, kw_only=True):
    """Exact counts of the jobs matching a query's filters: in all, by status and by origin."""

    total: int
    by_status: dict[str, int]
    by_origin: dict[str, int]
