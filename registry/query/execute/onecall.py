"""Strategy one-call: bitmap filters, count and page in one PAGE script call; the chunked path goes on if it must."""

from __future__ import annotations

import msgspec

from registry.query import cost
from registry.query.bits import member_id
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.bitmap import Counted, Resume, read_page
from registry.query.page_call import PageMode, compile_page
from registry.query.planner import Plan
from registry.query.spec import Page


async def run_one_call(ctx: QueryContext, plan: Plan, sizes: dict[str, int | None], *, no_filter: bool) -> Page:
    """The page in one call when its walk fits the budget; else the chunked path from the counted filter.

    The script deletes its temporary keys when it is done, so the common query costs this one
    round trip; a filter bitmap it leaves behind is handed to the query context to delete.
    """
    mode: PageMode = "handle" if plan.order_zset is None else "rank" if no_filter else "walk"
    f, scratch = ctx.keys.temp(), ctx.keys.temp()
    budget = ctx.settings.one_call_budget
    call = compile_page(
        ctx.keys,
        plan,
        sizes,
        mode,
        f,
        scratch,
        budget=budget,
        walk_limit=cost.one_call_walk_limit(budget),
        ttl_ms=TEMP_TTL_MS,
    )
    reply = await ctx.scripts.page(call)
    source = "all jobs" if no_filter else f"{len(plan.predicates)} filters as bitmaps"
    if reply.done:
        how = {"handle": "read from the bitmap in handle order", "rank": "by rank", "walk": "walked"}[mode]
        how = f"one call: {source}, counted; page {how}"
        return Page(total=reply.total, job_ids=[member_id(m) for m in reply.items], strategy=how)
    if no_filter:
        f = ctx.keys.all
    else:
        ctx.adopt(f)
    counted = Counted(f, reply.total, reply.listed, reply.first, 0)
    resume = Resume(reply.phase, reply.rank, reply.skip, reply.items) if reply.phase else None
    page = await read_page(ctx, plan, counted, no_filter=no_filter, resume=resume)
    why = "walk over budget" if reply.phase else "walk estimate over budget"
    return msgspec.structs.replace(page, strategy=f"one call counted ({why}); {page.strategy}")
