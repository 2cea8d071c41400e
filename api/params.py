"""Query-string parsing and validation into a typed JobQuery, collecting every bad parameter."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from registry.domain.model import Origin, Status, parse_timestamp
from registry.errors import InvalidQuery, QueryTooLong
from registry.query.spec import MAX_LIMIT, MAX_LIST, Direction, JobQuery, OrderBy
from registry.wire.events import UUID_RE

T = TypeVar("T")
_PREFIX_RE = re.compile(r"^[0-9a-fA-F-]{1,36}$")
_INT_RE = re.compile(r"^[+-]?[0-9]{1,18}$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}

LIST_PARAMS = ("id", "batch_id", "project_id", "user_id", "status", "origin")
SCALAR_PARAMS = (
    "order_by",
    "order_by_direction",
    "limit",
    "offset",
    "id__starts_with",
    "min_runs",
    "max_runs",
    "errors",
    "start_date",
    "end_date",
)


# The longest valid query (six full 100-value lists of UUIDs or 128-character user ids, plus the
# scalars) is under 48 KiB; anything longer is refused without being parsed.
MAX_QUERY_BYTES = 64 * 1024


def check_query_size(query_string: bytes) -> None:
    """Raise QueryTooLong (414) for a query string no valid query needs."""
    if len(query_string) > MAX_QUERY_BYTES:
        raise QueryTooLong(len(query_string), MAX_QUERY_BYTES)


class _Bad(Exception):
    def __init__(self, msg: str, kind: str) -> None:
        super().__init__(msg)
        self.msg, self.kind = msg, kind


def _uuid(v: str) -> str:
    if not UUID_RE.match(v):
        raise _Bad(f"{v[:60]!r} is not a valid UUID", "uuid_parsing")
    return v.lower()


def _enum(cls: type[Any]) -> Callable[[str], Any]:
    def parse(v: str) -> Any:
        try:
            return cls(v)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise _Bad(f"{v[:60]!r} is not one of: {allowed}", "enum") from None

    return parse


def _user(v: str) -> str:
    if not 1 <= len(v) <= 128:
        raise _Bad("user_id must be 1 to 128 characters", "string_length")
    return v


def _int(v: str) -> int:
    if not _INT_RE.match(v.strip()):
        raise _Bad(f"{v[:60]!r} is not a valid integer", "int_parsing")
    return int(v)


def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _Bad(f"{v[:60]!r} is not a valid boolean", "bool_parsing")


def _datetime(v: str) -> int:
    try:
        return parse_timestamp(v.replace(" ", "+") if "T" in v and " " in v else v)
    except (ValueError, OverflowError):
        raise _Bad(f"{v[:60]!r} is not a valid date-time", "datetime_parsing") from None


def _prefix(v: str) -> str:
    if not _PREFIX_RE.match(v):
        raise _Bad("must be 1 to 36 hex digits and dashes", "string_pattern_mismatch")
    return v.lower()


def parse_query(pairs: Iterable[tuple[str, str]]) -> JobQuery:
    """Validate GET /api/v2/jobs parameters; raise InvalidQuery naming every offending one."""
    values: dict[str, list[str]] = defaultdict(list)
    for name, value in pairs:
        values[name].append(value)
    errors: list[tuple[str, str, str]] = []
    out: dict[str, Any] = {}

    def one(name: str, parse: Callable[[str], T]) -> T | None:
        got = values.get(name)
        if not got:
            return None
        try:
            return parse(got[-1])
        except _Bad as bad:
            errors.append((name, bad.msg, bad.kind))
            return None

    def many(name: str, parse: Callable[[str], T]) -> tuple[T, ...] | None:
        got = values.get(name)
        if not got:
            return None
        if len(got) > MAX_LIST:
            errors.append((name, f"at most {MAX_LIST} values", "too_long"))
            return None
        parsed: list[T] = []
        for v in got:
            try:
                parsed.append(parse(v))
            except _Bad as bad:
                errors.append((name, bad.msg, bad.kind))
                return None
        return tuple(parsed)

    out["order_by"] = one("order_by", _enum(OrderBy))
    out["direction"] = one("order_by_direction", _enum(Direction))
    limit = one("limit", _int)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        errors.append(("limit", f"must be between 1 and {MAX_LIMIT}", "range"))
        limit = None
    out["limit"] = limit
    offset = one("offset", _int)
    if offset is not None and offset < 0:
        errors.append(("offset", "must be greater than or equal to 0", "range"))
        offset = None
    out["offset"] = offset
    out["ids"] = many("id", _uuid)
    out["id_prefix"] = one("id__starts_with", _prefix)
    out["batch_ids"] = many("batch_id", _uuid)
    out["project_ids"] = many("project_id", _uuid)
    out["user_ids"] = many("user_id", _user)
    out["statuses"] = many("status", _enum(Status))
    out["origins"] = many("origin", _enum(Origin))
    out["min_runs"] = one("min_runs", _int)
    out["max_runs"] = one("max_runs", _int)
    out["errors"] = one("errors", _bool)
    out["start_date"] = one("start_date", _datetime)
    out["end_date"] = one("end_date", _datetime)
    if errors:
        raise InvalidQuery(errors)
    return JobQuery(**{k: v for k, v in out.items() if v is not None})
