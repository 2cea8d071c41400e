"""Strategy step: walk a sort set in rank order, testing each member against bitmaps, a chunk per call."""

from __future__ import annotations

from registry.query import cost
from registry.query.bits import i64s
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.ranges import existing
from registry.query.planner import Plan, Range
from registry.store import indexes
from registry.store.indexes import RUNS_BITS, SECOND_BITS, SECOND_US


async def zrange(ctx: QueryContext, zset: str, desc: bool, start: int, count: int) -> list[bytes]:
    """A plain rank range of a sort index (nothing to test)."""
    return await ctx.scripts.sort_range(zset, start, count, desc)


async def walk_segment(
    ctx: QueryContext,
    zset: str,
    desc: bool,
    require: list[str],
    exclude: list[str],
    skip: int,
    need: int,
    rank: int = 0,
    *,
    alternative: float | None = None,
    seen: tuple[int, int] = (0, 0),
) -> list[bytes] | None:
    """Members set in every ``require`` bitmap and clear in every ``exclude`` one: ``need`` after ``skip``.

    With ``alternative`` (what reading the page another way costs, in sort-set entries: cost.walk_alternative),
    None once the walk has read a share of that and the matches' density seen so far says the rest would
    cost more (cost.walk_gives_up): it checks its estimate against what it finds instead of committing to it.
    ``seen``: (entries read, matches found) by an earlier part of this walk at this rank (PAGE's), counted in.
    """
    out: list[bytes] = []
    scanned, matched = seen
    start = rank
    while True:
        rank, exhausted, matches = await ctx.scripts.walk(
            zset, require, exclude, rank, ctx.settings.walk_chunk, desc, skip + need
        )
        matched += len(matches)
        if skip:
            dropped = min(skip, len(matches))
            matches = matches[dropped:]
            skip -= dropped
        out += matches[: need - len(out)]
        if len(out) >= need or exhausted:
            return out
        left = skip + need - len(out)
        if alternative is not None and cost.walk_gives_up(left, scanned + rank - start, matched, alternative):
            return None


async def select_start(ctx: QueryContext, plan: Plan, f: str, count: int, skip: int) -> tuple[int, int]:
    """(rank to start walking at, matches left to skip there) for a deep offset, by BSI rank selection."""
    assert plan.order_bsi is not None and plan.order_zset is not None
    width, scale = (RUNS_BITS, 1) if plan.order_bsi == "runs" else (SECOND_BITS, SECOND_US)
    slices = [ctx.keys.slice(plan.order_bsi, i) for i in reversed(range(width))]
    present = await existing(ctx, slices)
    bits = [(k, width - 1 - i) for i, (k, ok) in enumerate(zip(slices, present, strict=True)) if ok]
    cand, scratch = ctx.temp(), ctx.temp()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.bitop("AND", cand, f, plan.nonnull or ctx.keys.all)
    pipe.pexpire(cand, TEMP_TTL_MS)
    await pipe.execute()
    rank, above = await ctx.scripts.select(
        cand,
        scratch,
        plan.order_zset,
        bits,
        skip=skip,
        desc=plan.desc,
        scale=scale,
        stop=cost.SELECT_STOP,
        count=count,
    )
    await ctx.redis.pexpire(scratch, TEMP_TTL_MS)
    return rank, skip - above


def order_range_start(plan: Plan) -> tuple[str, str] | None:
    """ZCOUNT bounds counting the sort-set entries before the first that a range on the
    order field itself admits (the walk starts at that rank); None without such a range."""
    for pred in plan.predicates:
        if not isinstance(pred, Range) or pred.field != plan.order.value:
            continue
        if plan.desc and pred.hi is not None:
            return f"({pred.hi}", "+inf"
        if not plan.desc and pred.lo is not None:
            return "-inf", f"({pred.lo}"
    return None


async def zone_start(ctx: QueryContext, plan: Plan, f: str, listed: int) -> int:
    """The rank in the order's sort set before which no match of the filter bitmap ``f`` can be,
    from a zone map bounding the matches' values (cost.zone_bound); 0 without one.

    The bitmap is counted in windows of whole zone blocks (one pipelined BITCOUNT each) and the
    bounds of the blocks of the windows holding matches give the largest (DESC) or smallest (ASC)
    value any match can have: the walk starts at the first entry past it, not at rank 0, when the
    filter correlates with the order (a project's jobs, a date window, both recent or both old).
    """
    bound = cost.zone_bound(plan)
    if bound is None or plan.order_zset is None or listed <= 0:
        return 0
    field, upper = bound
    block_bytes = indexes.ZONE_SIZE // 8
    n_blocks = listed // indexes.ZONE_SIZE + 1
    per = -(-n_blocks // cost.ZONE_WINDOWS)  # blocks per window
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.get(ctx.keys.zone_max(field) if upper else ctx.keys.zone_min(field))
    for w in range(0, n_blocks, per):
        pipe.bitcount(f, w * block_bytes, (w + per) * block_bytes - 1)
    raw, *counts = await pipe.execute()
    bounds = i64s(raw or b"")
    values: list[int] = []
    for i, n in enumerate(counts):
        if not n:
            continue
        blocks = range(i * per, min((i + 1) * per, n_blocks))
        if blocks[-1] >= len(bounds):
            return 0  # a block the zone map does not cover yet: no bound
        # zone_min holds the bound plus one, 0 for a block without values (nulls only: not walked).
        values += [bounds[b] for b in blocks] if upper else [bounds[b] - 1 for b in blocks if bounds[b]]
    if not values:
        return 0
    if upper:
        rank = await ctx.scripts.sort_count(plan.order_zset, f"({max(values)}", "+inf")
    else:
        rank = await ctx.scripts.sort_count(plan.order_zset, "-inf", f"({min(values)}")
    return int(rank)
