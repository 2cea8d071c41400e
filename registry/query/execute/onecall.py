"""Strategies in one call: bitmap filters counted and paged by PAGE, small drivers checked and sorted by PICK."""

from __future__ import annotations

import uuid as _uuid

import msgspec

from registry.live.changes import Position
from registry.query import cost
from registry.query.bits import member_id, uuid_text
from registry.query.check import compile_check
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.bitmap import Counted, Resume, read_page
from registry.query.page_call import PageMode, collect_order, compile_page
from registry.query.planner import AnyBit, IdIn, IdPrefix, Members, Plan, narrowed
from registry.query.scripts import JobIds, LexRange
from registry.query.spec import Page


async def run_one_call(ctx: QueryContext, plan: Plan, sizes: dict[str, int | None], *, no_filter: bool) -> Page:
    """The page in one call when its walk fits the budget; else the chunked path from the counted filter.

    The script deletes its temporary keys when it is done and returns the page's records and
    the change log's position with it, so the common query costs this one round trip; a filter
    bitmap it leaves behind is handed to the query context to delete. The chunked path reads
    after the call, so the position it read stays valid for the page it finds.
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
        collect_limit=cost.one_call_collect_limit(budget),
        ttl_ms=TEMP_TTL_MS,
    )
    reply = await ctx.scripts.page(call)
    source = "all jobs" if no_filter else f"{len(plan.predicates)} filters as bitmaps"
    if reply.done:
        how = {"handle": "read from the bitmap in handle order", "rank": "by rank", "walk": "walked"}[mode]
        if reply.phase:
            how = f"of {reply.total} matches sorted there"
        how = f"one call: {source}, counted; page {how}"
        job_ids = [member_id(m) for m in reply.items]
        return Page(total=reply.total, job_ids=job_ids, strategy=how, position=reply.position, records=reply.records)
    if no_filter:
        f = ctx.keys.all
    else:
        ctx.adopt(f)
    counted = Counted(f, reply.total, reply.listed, reply.first, 0)
    resume = Resume(reply.phase, reply.rank, reply.skip, reply.items) if reply.phase else None
    page = await read_page(ctx, plan, counted, no_filter=no_filter, resume=resume)
    why = "walk over budget" if reply.phase else "walk estimate over budget"
    return msgspec.structs.replace(page, strategy=f"one call counted ({why}); {page.strategy}", position=reply.position)


async def run_pick(
    ctx: QueryContext, plan: Plan, driver: Members | IdPrefix | IdIn, sizes: dict[str, int | None]
) -> Page | Position:
    """A small driver's jobs checked, ordered and paged in one PICK call, with their records and the
    change log's position; only the position if the driver grew past the budget (the chunked path
    that follows reads after it, so it stays valid for the page that path finds)."""
    others = [narrowed(p, sizes) for p in plan.predicates if p is not driver]
    # A list of statuses or origins is OR-ed into one bitmap first: one bit test per candidate; and
    # when it pays, every bitmap filter is AND-ed into one: one bit test per candidate in all.
    ors = [(ctx.keys.temp(), p.keys) for p in others if isinstance(p, AnyBit) and len(p.keys) > 1]
    it = iter(ors)
    checked = [AnyBit((next(it)[0],)) if isinstance(p, AnyBit) and len(p.keys) > 1 else p for p in others]
    bits = [p.keys[0] for p in checked if isinstance(p, AnyBit)]
    ands: list[tuple[str, list[str]]] = []
    if cost.pick_combines(len(bits), cost.driver_size(driver, sizes) or 0):
        ands = [(ctx.keys.temp(), bits)]
        checked = [AnyBit((ands[0][0],)), *[p for p in checked if not isinstance(p, AnyBit)]]
    program = compile_check(ctx.keys.uuids, plan.order_column, checked)
    order = collect_order(plan)
    source: list[str] | LexRange | JobIds
    if isinstance(driver, IdPrefix):
        source = LexRange(ctx.keys.sort("id"), *driver.lex_bounds())
        what = "id prefix"
    elif isinstance(driver, IdIn):
        source = JobIds(tuple(_uuid.UUID(i).bytes for i in driver.ids))
        what = f"id ({len(driver.ids)} ids)"
    else:
        source = [s for s in driver.sets if sizes.get(s)]
        what = f"{driver.kind} ({len(source)} sets)"
    picked = await ctx.scripts.pick(
        program,
        source,
        offset=plan.offset,
        limit=plan.limit,
        desc=plan.desc,
        order=order,
        cap=ctx.settings.one_call_budget,
        changes=ctx.keys.changes,
        record_prefix=ctx.keys.job_prefix(),
        ors=ors,
        ands=ands,
    )
    if not picked.done:
        return picked.position
    how = f"one call: {what} checked against {len(others)} other filters, sorted there"
    if isinstance(driver, IdPrefix) and not others and order == "id":
        how = "one call: id prefix, page by rank in its range of the id sort set"
    job_ids = [uuid_text(u) for u in picked.uuids]
    return Page(total=picked.total, job_ids=job_ids, strategy=how, position=picked.position, records=picked.records)
