"""Strategies rank and bitmap-*: count the filter bitmap, then read the page by handle, collect, scan or walk."""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from registry.query import cost
from registry.query.bits import bit_positions, member_id
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.collect import collect
from registry.query.execute.filters import filter_bitmap
from registry.query.execute.ranges import range_bitmaps
from registry.query.execute.rows import ids_of
from registry.query.execute.scan import scan
from registry.query.execute.top import select_top
from registry.query.execute.walk import order_range_start, select_start, walk_segment, zone_start, zrange
from registry.query.planner import Plan, Range
from registry.query.spec import Page


class Counted(NamedTuple):
    """The filter bitmap and its counts: matches, jobs listed, matches with an order value
    (``first``, before a nullable order's nulls), and the rank no match precedes."""

    f: str
    total: int
    listed: int
    first: int
    start_rank: int


class Resume(NamedTuple):
    """Where an earlier walk of this plan stopped: phase 1 (the sort set) or 2 (the nulls, by id),
    at ``rank`` with ``skip`` matches still to skip, having found ``members``."""

    phase: int
    rank: int
    skip: int
    members: list[bytes]


async def run_bitmap(ctx: QueryContext, plan: Plan, sizes: dict[str, int | None], *, no_filter: bool) -> Page:
    if no_filter:
        f = ctx.keys.all
    else:
        ranges = [p for p in plan.predicates if isinstance(p, Range)]
        f = await filter_bitmap(ctx, [p for p in plan.predicates if not isinstance(p, Range)], sizes)
        if ranges:
            pipe = ctx.redis.pipeline(transaction=False)
            pipe.bitcount(f)
            pipe.get(ctx.keys.seq)  # handles issued: how many jobs are listed
            few, listed = (int(x or 0) for x in await pipe.execute())
            if cost.check_ranges(few, ranges, plan, listed, ctx.settings):
                handles = bit_positions(await ctx.redis.get(f) or b"", 0, few, False)
                how = f"bitmaps AND-ed to {few} jobs, checked against {len(ranges)} ranges"
                return await collect(ctx, plan, handles, ranges, how=how)
            parts = [f, *await range_bitmaps(ctx, ranges)]
            f = await ctx.bitop("AND", parts)
    return await read_page(ctx, plan, await count(ctx, plan, f), no_filter=no_filter)


async def count(ctx: QueryContext, plan: Plan, f: str) -> Counted:
    """The filter bitmap's counts, in one round trip."""
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.get(ctx.keys.seq)  # handles issued: how many jobs are listed
    pipe.bitcount(f)
    if plan.nonnull is not None:
        both = ctx.temp()
        pipe.bitop("AND", both, f, plan.nonnull)
        pipe.bitcount(both)
        pipe.pexpire(both, TEMP_TTL_MS)
    start = order_range_start(plan)
    if start is not None:
        ctx.scripts.sortread_on(pipe, plan.order_zset or "", "count", *start)
    counts = await pipe.execute()
    total = int(counts[1])
    first = total if plan.nonnull is None else int(counts[3])
    # No match ranks before the bound of a range on the order field itself.
    start_rank = int(counts[-1]) if start is not None else 0
    return Counted(f, total, int(counts[0] or 0), first, start_rank)


async def read_page(  # noqa: C901  one decision ladder (count, order, offset depth) kept in reading order
    ctx: QueryContext, plan: Plan, c: Counted, *, no_filter: bool, resume: Resume | None = None
) -> Page:
    """The page of a counted filter bitmap; ``resume`` continues a walk that stopped (if walking is chosen).

    A walk of the filter's matches stops once the density it finds says the rest would cost more than the
    alternative (cost.walk_gives_up; cost.walk_alternative: select over the order's BSI, or collect); that
    reads the page instead. PAGE's walk (``resume``) is the first sample, unless the zone map moves the walk on.
    """
    f, total, listed, first = c.f, c.total, c.listed, c.first
    source = "all jobs" if no_filter else f"{len(plan.predicates)} filters as bitmaps"
    if plan.offset >= total:
        return Page(total=total, job_ids=[], strategy=f"{source}, counted; offset past the end")
    strategy = cost.refine(
        plan, total, listed, ctx.settings.collect_threshold, first=first, select_offset=ctx.settings.select_offset
    )
    if strategy != "bitmap-handles" and not no_filter and cost.scan_pays(plan, total, listed, ctx.settings):
        page = await scan(ctx, plan, total, bitmap=f)
        return msgspec.structs.replace(page, strategy=f"{source}, counted; {page.strategy}")
    if strategy != "bitmap-handles" and not no_filter and cost.top_pays(plan, strategy, total, listed, first):
        return await _top_page(ctx, plan, c, f"{source}, counted")
    if strategy == "bitmap-collect":
        return await _collect_page(ctx, plan, c, f"{source}, counted")
    if strategy == "bitmap-handles":
        data = await ctx.redis.get(f) or b""
        handles = bit_positions(data, plan.offset, plan.limit, plan.desc)
        how = f"{source}, counted; page read from the bitmap in handle order"
        return Page(total=total, job_ids=await ids_of(ctx, handles), strategy=how)
    # Walk: the sort set for jobs with a value, then (nullable orders) the rest by id.
    assert plan.order_zset is not None
    alternative, alternative_cost = cost.walk_alternative(plan, total, listed, first)
    members: list[bytes] | None = []
    skip, need = plan.offset, plan.limit
    how = f"{source}, counted; page by rank in the sort set"
    if resume is not None and (resume.phase == 2 or not cost.select_pays(plan, skip, ctx.settings)):
        members = list(resume.members)
        how = f"{source}, counted; walk resumed at rank {resume.rank}"
        if resume.phase == 1:
            want = min(need, first - skip) - len(members)
            if want > 0:
                # No match lies between where the walk stopped and the zone map's bound: jump there.
                rank = max(resume.rank, await zone_start(ctx, plan, f, listed))
                # PAGE's walk samples the density, unless the walk jumps past what it read.
                seen = (resume.rank, plan.offset - resume.skip + len(members)) if rank == resume.rank else (0, 0)
                if rank > resume.rank:
                    how += f", jumped to rank {rank} by the zone map"
                more = await walk_segment(
                    ctx,
                    plan.order_zset,
                    plan.desc,
                    [f],
                    [],
                    resume.skip,
                    want,
                    rank,
                    alternative=alternative_cost,
                    seen=seen,
                )
                members = None if more is None else members + more
        skip, rank = (resume.skip, resume.rank) if resume.phase == 2 else (0, 0)
    elif skip < first:
        if no_filter:
            members = await zrange(ctx, plan.order_zset, plan.desc, skip, need)
        else:
            rank = c.start_rank
            how = f"{source}, counted; sort set walked from rank {rank}"
            if c.start_rank:
                how += f" (the {plan.order.value} range's bound)"
            zoned = await zone_start(ctx, plan, f, listed)
            if zoned > rank:
                rank = zoned
                how = f"{source}, counted; sort set walked from rank {rank} (the zone map's bound)"
            if cost.select_pays(plan, skip, ctx.settings):
                rank, skip = await select_start(ctx, plan, f, first, skip)
                how = f"{source}, counted; start rank {rank} selected by counting over the {plan.order_bsi} BSI"
            # At most the matches left: the walk stops at the last one instead of reading on to the end.
            want = min(need, first - skip)
            members = await walk_segment(
                ctx, plan.order_zset, plan.desc, [f], [], skip, want, rank, alternative=alternative_cost
            )
        skip, rank = 0, 0
    else:
        skip, rank = skip - first, 0
    if members is None:
        how = f"{source}, counted; walk stopped (its matches sparser than the alternative's cost allows)"
        if alternative == "top":
            return await _top_page(ctx, plan, c, how)
        return await _collect_page(ctx, plan, c, how)
    if len(members) < need and plan.nonnull is not None:
        members += (
            await walk_segment(
                ctx, ctx.keys.sort("id"), plan.desc, [f], [plan.nonnull], skip, need - len(members), rank
            )
            or []
        )
    return Page(total=total, job_ids=[member_id(m) for m in members], strategy=how)


async def _top_page(ctx: QueryContext, plan: Plan, c: Counted, source: str) -> Page:
    """The page from the matches that can hold it, selected by counting over the order's bit-sliced index."""
    handles = await select_top(ctx, plan, c.f, c.first, c.listed)
    how = f"{source}; {len(handles)} selected by counting over the {plan.order_bsi} BSI"
    page = await collect(ctx, plan, handles, [], how=how)
    return Page(total=c.total, job_ids=page.job_ids, strategy=page.strategy)


async def _collect_page(ctx: QueryContext, plan: Plan, c: Counted, how: str) -> Page:
    """The page from every match, its order value read and sorted here."""
    handles = bit_positions(await ctx.redis.get(c.f) or b"", 0, c.total, False)
    return await collect(ctx, plan, handles, [], how=how)
