"""The seek after a page (registry/query/seek.py): ranged when its ties are known, by position otherwise."""

from __future__ import annotations

import pytest

from registry.domain.model import Job, Origin, Status, parse_timestamp
from registry.keys import Keys
from registry.query.planner import NoBit, Range, plan
from registry.query.seek import Seek, next_seek, null_segment, order_value, ranged, seek_plan
from registry.query.spec import Direction, JobQuery, OrderBy


def job(n: int, runs: int = 5, start: str | None = None) -> Job:
    return Job(
        id=f"00000000-0000-4000-8000-{n:012d}",
        parent_id=None,
        batch_id="b",
        project_id="p",
        user_id="u",
        status=Status.DONE,
        runs=runs,
        origin=Origin.CLIENT,
        errors=[],
        variables=None,
        creation_order=n,
        created_at=f"2026-01-05T08:00:{n:02d}.000001+00:00",
        updated_at=f"2026-01-05T09:00:{n:02d}+00:00",
        start_timestamp=start,
        end_timestamp=None,
    )


def test_the_order_value_is_what_the_indexes_hold() -> None:
    j = job(7, runs=3, start="2026-01-05T08:30:00+00:00")
    assert order_value(j, OrderBy.CREATED_AT) == parse_timestamp("2026-01-05T08:00:07.000001Z")
    assert order_value(j, OrderBy.START_TIMESTAMP) == parse_timestamp("2026-01-05T08:30:00Z")
    assert order_value(j, OrderBy.RUNS) == 3 and order_value(j, OrderBy.CREATION_ORDER) == 7
    assert order_value(j, OrderBy.ID) is None and order_value(j, OrderBy.END_TIMESTAMP) is None


def test_ties_are_counted_back_from_the_last_row() -> None:
    page = [job(1, runs=9), job(2, runs=5), job(3, runs=5)]
    assert next_seek(OrderBy.RUNS, None, 0, page) == Seek(5, page[-1].id, 2, 3)


def test_a_page_of_ties_adds_the_ties_of_the_seek_it_followed() -> None:
    prev = Seek(5, job(3).id, 2, 3)
    page = [job(4), job(5)]
    assert next_seek(OrderBy.RUNS, prev, 3, page) == Seek(5, page[-1].id, 4, 5)
    # After a seek at another value the page's rows are the first at this one.
    assert next_seek(OrderBy.RUNS, Seek(9, job(1).id, 1, 3), 3, page) == Seek(5, page[-1].id, 2, 5)


@pytest.mark.parametrize("prev", [None, Seek(None, job(1).id, 0, 3)])
def test_a_page_of_ties_after_an_offset_or_a_positional_seek_resumes_by_position(prev: Seek | None) -> None:
    s = next_seek(OrderBy.RUNS, prev, 3, [job(4), job(5)])
    assert s == Seek(5, job(5).id, 0, 5) and not ranged(s, OrderBy.RUNS)


def test_orders_without_a_range_index_and_nulls_resume_by_position() -> None:
    for order in (OrderBy.UPDATED_AT, OrderBy.ID, OrderBy.CREATION_ORDER, OrderBy.START_TIMESTAMP):
        s = next_seek(order, None, 0, [job(1), job(2)])
        assert not ranged(s, order) and s.served == 2, order


def test_a_ranged_seek_adds_a_range_bound_on_the_order_key_and_skips_the_ties() -> None:
    keys = Keys("t")
    desc = plan(JobQuery(order_by=OrderBy.START_TIMESTAMP, limit=10), keys)
    bounded = seek_plan(desc, Seek(1000, job(1).id, 3, 40), keys)
    assert bounded.predicates[-1] == Range(
        "start_timestamp", keys.sort("start_timestamp"), keys.column("start_timestamp"), True, None, 1000
    )
    assert (bounded.offset, bounded.limit) == (3, 11)
    asc = plan(JobQuery(order_by=OrderBy.RUNS, direction=Direction.ASC, limit=10), keys)
    assert seek_plan(asc, Seek(5, job(1).id, 1, 40), keys).predicates[-1].lo == 5  # type: ignore[union-attr]
    positional = seek_plan(asc, Seek(5, job(1).id, 0, 40), keys)
    assert (positional.predicates, positional.offset) == (asc.predicates, 40)
    nulls = null_segment(desc, keys, 4)
    assert nulls.predicates[-1] == NoBit(keys.started) and nulls.order is OrderBy.ID and nulls.limit == 4
