"""The query parameters of GET /api/v2/jobs, declared once: the table that drives parsing, docs and matching."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry.domain.model import JobState, Origin, Status, parse_timestamp
from registry.query.planner import prefix_range
from registry.query.spec import MAX_LIMIT, Direction, OrderBy
from registry.wire.events import UUID_RE


class Kind(enum.Enum):
    """How a parameter's text is parsed (and documented)."""

    ENUM = "enum"
    UUID = "uuid"
    STRING = "string"
    PATTERN = "pattern"
    INT = "int"
    BOOL = "bool"
    DATETIME = "datetime"


class BadValue(Exception):
    """One bad parameter value: a message and an error type, as the 422 body reports them."""

    def __init__(self, msg: str, kind: str) -> None:
        super().__init__(msg)
        self.msg, self.kind = msg, kind


_INT_RE = re.compile(r"^[+-]?[0-9]{1,18}$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

# How a listed job passes one filter, given the parsed (non-None) value.
Matcher = Callable[[JobState, Any], bool]


@dataclass(frozen=True, kw_only=True)
class Param:
    """One query parameter: its name, the JobQuery field it fills, its type and bounds, and its filter."""

    name: str  # in the query string
    field: str  # of JobQuery
    kind: Kind
    description: str
    many: bool = False  # given by repeating the parameter; a list means any of
    values: type[enum.StrEnum] | None = None  # Kind.ENUM
    default: str | int | None = None
    minimum: int | None = None
    maximum: int | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None  # Kind.PATTERN, with ``mismatch`` its error message
    mismatch: str = ""
    matches: Matcher | None = None  # None: not a filter (ordering, paging)

    def parse(self, text: str) -> Any:
        """The typed value of one occurrence; raises BadValue with the 422 message and type."""
        if self.kind is Kind.ENUM:
            assert self.values is not None
            try:
                return self.values(text)
            except ValueError:
                allowed = ", ".join(m.value for m in self.values)
                raise BadValue(f"{text[:60]!r} is not one of: {allowed}", "enum") from None
        if self.kind is Kind.UUID:
            if not UUID_RE.match(text):
                raise BadValue(f"{text[:60]!r} is not a valid UUID", "uuid_parsing")
            return text.lower()
        if self.kind is Kind.STRING:
            if not (self.min_length or 0) <= len(text) <= (self.max_length or len(text)):
                raise BadValue(
                    f"{self.name} must be {self.min_length} to {self.max_length} characters", "string_length"
                )
            return text
        if self.kind is Kind.PATTERN:
            assert self.pattern is not None
            if not re.match(self.pattern, text):
                raise BadValue(self.mismatch, "string_pattern_mismatch")
            return text.lower()
        if self.kind is Kind.INT:
            return self._bounded(_int(text))
        if self.kind is Kind.BOOL:
            return _bool(text)
        return _datetime(text)

    def _bounded(self, value: int) -> int:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= value <= high:
            raise BadValue(f"must be between {low} and {high}", "range")
        if low is not None and high is None and value < low:
            raise BadValue(f"must be greater than or equal to {low}", "range")
        return value


def _int(text: str) -> int:
    if not _INT_RE.match(text.strip()):
        raise BadValue(f"{text[:60]!r} is not a valid integer", "int_parsing")
    return int(text)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadValue(f"{text[:60]!r} is not a valid boolean", "bool_parsing")


def _datetime(text: str) -> int:
    # A "+" in an unencoded query string arrives as a space: "T10:00:00 01:00" means "+01:00".
    try:
        return parse_timestamp(text.replace(" ", "+") if "T" in text and " " in text else text)
    except (ValueError, OverflowError):
        raise BadValue(f"{text[:60]!r} is not a valid date-time", "datetime_parsing") from None


def _has_prefix(state: JobState, prefix: str) -> bool:
    prefix = prefix.lower()
    return prefix_range(prefix) is not None and state.job_id.startswith(prefix)


def _runs(state: JobState) -> int:
    assert state.created is not None  # only listed jobs are matched
    return state.created.runs


def _end(state: JobState) -> int | None:
    return state.terminal.occurred_at if state.terminal else None


def _created(state: JobState) -> Any:
    assert state.created is not None  # only listed jobs are matched
    return state.created


# In this order the query string is parsed, its errors reported and its parameters documented.
PARAMS: tuple[Param, ...] = (
    Param(
        name="order_by",
        field="order_by",
        kind=Kind.ENUM,
        values=OrderBy,
        default=OrderBy.CREATED_AT.value,
        description="Sort key; ties are broken by id; nulls come last.",
    ),
    Param(
        name="order_by_direction",
        field="direction",
        kind=Kind.ENUM,
        values=Direction,
        default=Direction.DESC.value,
        description="Sort direction.",
    ),
    Param(
        name="limit",
        field="limit",
        kind=Kind.INT,
        minimum=1,
        maximum=MAX_LIMIT,
        default=MAX_LIMIT,
        description=f"Page size (1..{MAX_LIMIT}).",
    ),
    Param(
        name="offset",
        field="offset",
        kind=Kind.INT,
        minimum=0,
        default=0,
        description="Items skipped; past the end gives an empty page.",
    ),
    Param(
        name="page_token",
        field="page_token",
        kind=Kind.STRING,
        min_length=1,
        max_length=512,
        description=(
            "Resume after the last row of an earlier page: its pagination.next_page_token (same filters "
            "and order; replaces offset). Costs the same at any depth."
        ),
    ),
    Param(
        name="id",
        field="ids",
        kind=Kind.UUID,
        many=True,
        description="Job ids.",
        matches=lambda s, v: s.job_id in v,
    ),
    Param(
        name="id__starts_with",
        field="id_prefix",
        kind=Kind.PATTERN,
        pattern="^[0-9a-fA-F-]{1,36}$",
        mismatch="must be 1 to 36 hex digits and dashes",
        description="Prefix of the canonical lowercase id.",
        matches=_has_prefix,
    ),
    Param(
        name="batch_id",
        field="batch_ids",
        kind=Kind.UUID,
        many=True,
        description="Batch ids.",
        matches=lambda s, v: _created(s).batch_id in v,
    ),
    Param(
        name="project_id",
        field="project_ids",
        kind=Kind.UUID,
        many=True,
        description="Project ids.",
        matches=lambda s, v: _created(s).project_id in v,
    ),
    Param(
        name="user_id",
        field="user_ids",
        kind=Kind.STRING,
        many=True,
        min_length=1,
        max_length=128,
        description="User ids.",
        matches=lambda s, v: _created(s).user_id in v,
    ),
    Param(
        name="status",
        field="statuses",
        kind=Kind.ENUM,
        values=Status,
        many=True,
        description="Job statuses.",
        matches=lambda s, v: s.status in v,
    ),
    Param(
        name="origin",
        field="origins",
        kind=Kind.ENUM,
        values=Origin,
        many=True,
        description="Job origins.",
        matches=lambda s, v: _created(s).origin in v,
    ),
    Param(
        name="min_runs",
        field="min_runs",
        kind=Kind.INT,
        description="Inclusive lower bound on runs.",
        matches=lambda s, v: _runs(s) >= v,
    ),
    Param(
        name="max_runs",
        field="max_runs",
        kind=Kind.INT,
        description="Inclusive upper bound on runs.",
        matches=lambda s, v: _runs(s) <= v,
    ),
    Param(
        name="errors",
        field="errors",
        kind=Kind.BOOL,
        description="true: jobs with at least one error; false: jobs with none.",
        matches=lambda s, v: bool(s.terminal and s.terminal.errors) == v,
    ),
    Param(
        name="start_date",
        field="start_date",
        kind=Kind.DATETIME,
        description="start_timestamp >= start_date (no zone = UTC).",
        matches=lambda s, v: s.start_timestamp is not None and s.start_timestamp >= v,
    ),
    Param(
        name="end_date",
        field="end_date",
        kind=Kind.DATETIME,
        description="end_timestamp <= end_date (no zone = UTC).",
        matches=lambda s, v: (end := _end(s)) is not None and end <= v,
    ),
)

# The parameters that filter (the rest order and page).
FILTERS: tuple[Param, ...] = tuple(p for p in PARAMS if p.matches is not None)
