"""Strategy: candidates. A small driving predicate's jobs are checked against the other filters."""

from __future__ import annotations

import uuid as _uuid

from registry.query.bits import bit_positions, member_handle
from registry.query.context import QueryContext
from registry.query.execute.collect import collect
from registry.query.planner import IdIn, IdPrefix, Members, Plan, Predicate, narrowed
from registry.query.spec import Page
from registry.store import record


async def candidate_handles(
    ctx: QueryContext, driver: Predicate, sizes: dict[str, int | None]
) -> tuple[list[int], dict[int, bytes]]:
    """The driver's handles, and the uuids of those it already names (ids, id prefix)."""
    if isinstance(driver, IdIn):
        found = await record.handles(ctx.redis, ctx.keys, driver.ids)
        known = {h: _uuid.UUID(job_id).bytes for job_id, h in zip(driver.ids, found, strict=True) if h is not None}
        return sorted(known), known
    if isinstance(driver, IdPrefix):
        members = await ctx.scripts.sort_rangebylex(ctx.keys.sort("id"), *driver.lex_bounds())
        known = {member_handle(m): m[:16] for m in members}
        return sorted(known), known
    assert isinstance(driver, Members)
    pipe = ctx.redis.pipeline(transaction=False)
    for s, b in zip(driver.sets, driver.bitmaps, strict=True):
        if sizes.get(b):
            pipe.get(b)
        elif sizes.get(s):
            pipe.smembers(s)
    handles: set[int] = set()
    for reply in await pipe.execute():
        if isinstance(reply, bytes):
            handles.update(bit_positions(reply, 0, len(reply) * 8, False))
        else:
            handles.update(int(m) for m in reply)
    return sorted(handles), {}


async def run_candidates(ctx: QueryContext, plan: Plan, driver: Predicate, sizes: dict[str, int | None]) -> Page:
    handles, known = await candidate_handles(ctx, driver, sizes)
    what = driver.kind if isinstance(driver, Members) else "id" if isinstance(driver, IdIn) else "id prefix"
    others = [narrowed(p, sizes) for p in plan.predicates if p is not driver]
    how = f"candidates: {what} ({len(handles)} jobs) checked against {len(others)} other filters"
    return await collect(ctx, plan, handles, others, known, how)
