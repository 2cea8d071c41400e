"""Timestamps render exactly as datetime.isoformat would, for any instant the registry accepts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from registry.domain.model import parse_timestamp, render_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=(datetime(9999, 12, 31, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)))
def test_render_matches_isoformat_and_round_trips(us: int) -> None:
    text = render_timestamp(us)
    assert text == (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")
    assert parse_timestamp(text) == us


def test_render_none() -> None:
    assert render_timestamp(None) is None
