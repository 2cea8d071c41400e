"""Strategy step: the few matches that can hold the page, selected by counting over the order's
bit-sliced index (lua/top.lua), their values read and sorted here."""

from __future__ import annotations

from registry.query import cost
from registry.query.bits import bit_positions
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.ranges import existing
from registry.query.planner import Plan
from registry.store.indexes import RUNS_BITS, SECOND_BITS


async def select_top(ctx: QueryContext, plan: Plan, f: str, first: int, listed: int) -> list[int]:
    """Handles of the matches of ``f`` with an order value that can be among the first
    offset + limit in order: those, and fewer than cost.TOP_STOP more (ties included: jobs with
    one BSI value are never split), in handle order. Needs offset + limit <= first."""
    assert plan.order_bsi is not None
    width = RUNS_BITS if plan.order_bsi == "runs" else SECOND_BITS
    slices = [ctx.keys.slice(plan.order_bsi, i) for i in reversed(range(width))]
    present = await existing(ctx, slices)
    slices = [k for k, ok in zip(slices, present, strict=True) if ok]  # a slice never written: all zeros
    cand, scratch, result = ctx.temp(), ctx.temp(), ctx.temp()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.bitop("AND", cand, f, plan.nonnull or ctx.keys.all)
    pipe.pexpire(cand, TEMP_TTL_MS)
    await pipe.execute()
    skip, count = plan.offset + plan.limit - 1, first
    step = cost.top_slices(listed)
    while True:
        part = slices[:step]
        count, did, swapped, done, skip = await ctx.scripts.top(
            cand,
            scratch,
            result,
            part,
            skip=skip,
            desc=plan.desc,
            stop=cost.TOP_STOP,
            count=count,
            last=len(part) == len(slices),
            ttl_ms=TEMP_TTL_MS,
        )
        if done:
            break
        if swapped:
            cand, scratch = scratch, cand
        slices = slices[did:]
    data = await ctx.redis.get(result) or b""
    return bit_positions(data, 0, len(data) * 8, False)
