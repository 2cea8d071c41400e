"""Rows of (order value, handle): their values and uuids read in chunks, and the page cut from them."""

from __future__ import annotations

import uuid as _uuid
from typing import Any

from registry.query import cost
from registry.query.check import compile_check
from registry.query.context import QueryContext
from registry.query.planner import Plan

Row = tuple[Any, int]  # (order value, or uuid bytes when ordered by id; handle)


async def uuids(ctx: QueryContext, handles: list[int]) -> dict[int, bytes]:
    """The uuid bytes of each handle, one script call per chunk, all in one round trip."""
    blob = await ctx.scripts.uuids(ctx.keys.uuids, handles, ctx.settings.walk_chunk)
    return {h: blob[16 * k : 16 * k + 16] for k, h in enumerate(handles)}


async def ids_of(ctx: QueryContext, handles: list[int]) -> list[str]:
    """The job ids of ``handles``, in their order."""
    by_handle = await uuids(ctx, handles)
    return [str(_uuid.UUID(bytes=by_handle[h])) for h in handles]


async def values(ctx: QueryContext, plan: Plan, handles: list[int]) -> list[Row]:
    """(order value, handle) of each handle, read from the order field's column."""
    program = compile_check(ctx.keys.uuids, plan.order_column, ())
    rows = await ctx.scripts.check_chunks(
        program, handles, cost.check_chunk((), plan.order_column, ctx.settings.walk_chunk), False
    )
    return [(row.value, row.handle) for row in rows]


async def arrange(
    ctx: QueryContext,
    plan: Plan,
    present: list[Row],
    nulls: list[int],
    known: dict[int, bytes],
    unique: bool,
    present_total: int | None = None,
) -> list[str]:
    """The page of (value, handle) rows ordered by (value, id), nulls last by id, both in the plan's direction.

    Only the rows whose order can depend on their id (equal values around the page, or
    nulls) need their uuid read. ``present_total``: how many matches have a value, when
    ``present`` holds only those that can be in the page (CHECK's top mode); the nulls follow them.
    """
    lo, hi = plan.offset, plan.offset + plan.limit
    present.sort(key=lambda row: row[0], reverse=plan.desc)
    s, e = min(lo, len(present)), min(hi, len(present))
    if not unique and s < e:
        while s > 0 and present[s - 1][0] == present[s][0]:
            s -= 1
        while e < len(present) and present[e][0] == present[e - 1][0]:
            e += 1
    with_nulls = hi > (len(present) if present_total is None else present_total)
    need = [h for _, h in present[s:e]] + (nulls if with_nulls else [])
    known.update(await uuids(ctx, [h for h in need if h not in known]))
    window = present[s:e] if unique else sorted(present[s:e], key=lambda r: (r[0], known[r[1]]), reverse=plan.desc)
    tail = sorted(nulls, key=known.__getitem__, reverse=plan.desc) if with_nulls else []
    ordered = [h for _, h in window] + tail
    return [str(_uuid.UUID(bytes=known[h])) for h in ordered[lo - s : hi - s]]
