"""Test helper: turn query pairs into a JobQuery through the API's own parser."""

from __future__ import annotations

from api.params import parse_query
from registry.query.spec import JobQuery


def parse_params(params: list[tuple[str, str]]) -> JobQuery:
    return parse_query(params)
