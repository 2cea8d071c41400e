"""Query-string parsing and validation into a typed JobQuery, collecting every bad parameter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from registry.errors import InvalidQuery, QueryTooLong
from registry.query.params import PARAMS, BadValue, Param
from registry.query.spec import MAX_LIST, JobQuery

# The longest valid query (six full 100-value lists of UUIDs or 128-character user ids, plus the
# scalars) is under 48 KiB; anything longer is refused without being parsed.
MAX_QUERY_BYTES = 64 * 1024


def check_query_size(query_string: bytes) -> None:
    """Raise QueryTooLong (414) for a query string no valid query needs."""
    if len(query_string) > MAX_QUERY_BYTES:
        raise QueryTooLong(len(query_string), MAX_QUERY_BYTES)


def _parse_one(param: Param, got: list[str], errors: list[tuple[str, str, str]]) -> Any:
    """The parameter's value (None when absent or bad; bad ones are added to ``errors``).

    A scalar given several times takes its last value; a list takes them all, at most MAX_LIST.
    """
    try:
        if not param.many:
            return param.parse(got[-1])
        if len(got) > MAX_LIST:
            errors.append((param.name, f"at most {MAX_LIST} values", "too_long"))
            return None
        return tuple(param.parse(v) for v in got)
    except BadValue as bad:
        errors.append((param.name, bad.msg, bad.kind))
        return None


def parse_query(pairs: Iterable[tuple[str, str]]) -> JobQuery:
    """Validate GET /api/v2/jobs parameters; raise InvalidQuery naming every offending one."""
    values: dict[str, list[str]] = defaultdict(list)
    for name, value in pairs:
        values[name].append(value)
    errors: list[tuple[str, str, str]] = []
    out: dict[str, Any] = {}
    for param in PARAMS:
        got = values.get(param.name)
        if got:
            out[param.field] = _parse_one(param, got, errors)
    if errors:
        raise InvalidQuery(errors)
    return JobQuery(**{k: v for k, v in out.items() if v is not None})
