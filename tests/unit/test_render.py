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


@given(st.integers(min_value=(datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1), max_value=-1))
def test_render_before_the_epoch(us: int) -> None:
    assert render_timestamp(us) == (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")


def test_render_after_the_day_cache_fills() -> None:
    """The per-day prefixes are remembered in a bounded cache; emptied when full, they are made again."""
    day_us = 86_400 * 1_000_000
    for day in range(5000):
        us = day * day_us + 3_723_000_004  # 01:02:03.000004
        assert render_timestamp(us) == (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")
