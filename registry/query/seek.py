"""Cursor pagination: where a page token resumes (a Seek), the plans that read from there, and the next Seek.

Listing is ordered by (order value, id), nulls last. A page token resumes after the last row served,
(value, id), without counting the rows before it: for an order with a range index (created_at,
start_timestamp, end_timestamp, runs) the next page is the plan's filters plus a range bound on the
order key at that value, read from the start of the range; the rows at exactly that value (ties) come
by id, and the ones already served are skipped by count. So the cost is that of a first page with one
more range filter, whatever the depth (a tie group is skipped row by row: only ``runs`` has large
ones). Every strategy honours the bound, as it honours any range filter. The other orders (updated_at,
creation_order, id) and a cursor among a nullable order's nulls resume by position (the offset path).
"""

from __future__ import annotations

import msgspec

from registry.domain.model import Job, parse_timestamp
from registry.keys import Keys
from registry.query.execute.walk import order_range_start
from registry.query.executor import Executor, Listing
from registry.query.planner import NoBit, Plan, Range
from registry.query.spec import OrderBy

# Orders whose values the planner can bound with a Range (a sort set, a column and a bit-sliced index).
RANGED = frozenset({OrderBy.CREATED_AT, OrderBy.START_TIMESTAMP, OrderBy.END_TIMESTAMP, OrderBy.RUNS})


class Seek(msgspec.Struct, frozen=True, array_like=True):
    """Where the next page starts: after the row (``value``, ``job_id``) in the query's order.

    ``ties`` counts the rows served whose order value is ``value`` (that row included): they are
    skipped at the start of the range bound. 0 means "resume by position": ``served`` rows skipped,
    as an offset. ``served`` is always the number of rows before the next page (its ``start``).
    """

    value: int | None
    job_id: str
    ties: int
    served: int


def order_value(job: Job, order: OrderBy) -> int | None:
    """The job's value of the order key as the indexes hold it (µs for timestamps); None for id and nulls."""
    if order is OrderBy.RUNS:
        return job.runs
    if order is OrderBy.CREATION_ORDER:
        return job.creation_order
    if order is OrderBy.ID:
        return None
    text: str | None = getattr(job, order.value)
    return None if text is None else parse_timestamp(text)


def ranged(seek: Seek, order: OrderBy) -> bool:
    """Whether the seek resumes at a range bound on the order key (else by position)."""
    return seek.ties > 0 and seek.value is not None and order in RANGED


def seek_plan(plan: Plan, seek: Seek, keys: Keys) -> Plan:
    """The plan whose first ``plan.limit + 1`` rows follow the seek's row (one more tells whether a
    next page exists). Its total is not the query's: the caller counts that on ``plan``."""
    if not ranged(seek, plan.order):
        return msgspec.structs.replace(plan, offset=seek.served, limit=plan.limit + 1)
    assert seek.value is not None
    field = plan.order.value
    lo, hi = (None, seek.value) if plan.desc else (seek.value, None)
    bound = Range(field, keys.sort(field), keys.column(field), plan.nonnull is not None, lo, hi)  # type: ignore[arg-type]
    return msgspec.structs.replace(plan, predicates=(*plan.predicates, bound), offset=seek.ties, limit=plan.limit + 1)


def null_segment(plan: Plan, keys: Keys, limit: int) -> Plan:
    """The first ``limit`` rows of a nullable order's nulls: the filters' jobs without a value, by id
    in the same direction (how the order lists them, after every value)."""
    assert plan.nonnull is not None
    return msgspec.structs.replace(
        plan,
        predicates=(*plan.predicates, NoBit(plan.nonnull)),
        order=OrderBy.ID,
        order_zset=keys.sort(OrderBy.ID.value),
        order_column=None,
        order_bsi=None,
        nonnull=None,
        offset=0,
        limit=limit,
    )


def next_seek(order: OrderBy, prev: Seek | None, start: int, jobs: list[Job]) -> Seek:
    """The seek after the page ``jobs`` (non-empty), served from position ``start`` after ``prev``
    (None for an offset page)."""
    last = jobs[-1]
    value = order_value(last, order)
    served = start + len(jobs)
    if order not in RANGED or value is None:
        return Seek(value, last.id, 0, served)
    ties = 0
    for job in reversed(jobs):
        if order_value(job, order) != value:
            break
        ties += 1
    if ties == len(jobs) and start > 0:
        # The whole page shares the value: rows before it may too. After a ranged seek at another
        # value they cannot (the page starts past it), at the same value they are its ties;
        # before an offset page or a positional seek they are unknown: resume by position.
        if prev is None or not ranged(prev, order):
            return Seek(value, last.id, 0, served)
        if prev.value == value:
            ties += prev.ties
    return Seek(value, last.id, ties, served)


async def listing_after(executor: Executor, plan: Plan, seek: Seek) -> Listing:
    """The rows after the seek's row, up to ``plan.limit + 1`` (the extra one says a next page
    exists), and the exact total of ``plan``'s filters."""
    keys = executor.keys
    bounded = seek_plan(plan, seek, keys)
    if ranged(seek, plan.order) and not plan.predicates and not plan.empty:
        # Nothing filters: the entries before the bound, counted in the order's sort index (the
        # walks' own start, walk.order_range_start), plus the ties make the seek's exact rank, and a
        # page by rank is as cheap at any depth (and cheaper than a range bitmap over every job).
        assert plan.order_zset is not None
        start = order_range_start(bounded)
        assert start is not None
        before = await executor.scripts.sort_count(plan.order_zset, *start)
        by_rank = msgspec.structs.replace(plan, offset=before + seek.ties, limit=bounded.limit)
        page = await executor.listing(by_rank)
        return msgspec.structs.replace(page, strategy=f"page token, at rank {by_rank.offset}: {page.strategy}")
    page = await executor.listing(bounded)
    if not ranged(seek, plan.order):
        return msgspec.structs.replace(page, strategy=f"page token, by position {seek.served}: {page.strategy}")
    jobs, how = page.jobs, page.strategy
    if plan.nonnull is not None and len(jobs) < bounded.limit:
        # Past the last value come the nulls (the range bound admits none).
        nulls = await executor.listing(null_segment(plan, keys, bounded.limit - len(jobs)))
        jobs, how = jobs + nulls.jobs, f"{how}; then the nulls: {nulls.strategy}"
    total = await executor.total(plan)
    return Listing(total=total, jobs=jobs, strategy=f"page token, from its range bound: {how}", position=page.position)


async def list_page(executor: Executor, plan: Plan, seek: Seek | None) -> tuple[Listing, int, bool]:
    """GET /api/v2/jobs' page: at the plan's offset, or after ``seek``; with its start (the rows
    before it) and whether rows follow it (a next page token is due)."""
    if seek is None:
        page = await executor.listing(plan)
        return page, plan.offset, plan.offset + len(page.jobs) < page.total
    page = await listing_after(executor, plan, seek)
    more = len(page.jobs) > plan.limit
    return msgspec.structs.replace(page, jobs=page.jobs[: plan.limit]), seek.served, more
