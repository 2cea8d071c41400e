"""Strategy step: the page from matches read block by block in handle order, stopped by a zone map."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from registry.query.bits import bit_positions, i64s
from registry.query.context import QueryContext
from registry.query.execute.rows import Row, arrange, values
from registry.query.planner import Plan
from registry.query.spec import Page
from registry.store import indexes


async def scan(ctx: QueryContext, plan: Plan, total: int, *, bitmap: str = "", handles: Sequence[int] = ()) -> Page:
    """The page, from the matches (a bitmap, or sorted handles) read block by block in handle order.

    Handles follow arrival and so does the order field, so the first blocks read (the
    newest for DESC, the oldest for ASC) hold the page. The zone map bounds what every
    unread block could hold; once the page's last value beats that bound, the rest of
    the matches cannot enter the page and are never read.
    """
    zone_size = indexes.ZONE_SIZE
    field, desc, k = plan.order.value, plan.desc, plan.offset + plan.limit
    zone = ctx.keys.zone_max(field) if desc else ctx.keys.zone_min(field)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.get(zone)
    pipe.get(ctx.keys.seq)
    raw, seq = await pipe.execute()
    bounds = i64s(raw or b"")
    n_blocks = int(seq or 0) // zone_size + 1
    bounds += [0] * (n_blocks - len(bounds))
    # rest[b]: the best value any block before b (in scan order) could hold.
    order = range(n_blocks - 1, -1, -1) if desc else range(n_blocks)
    rest: list[float] = [0.0] * (n_blocks + 1)
    best = -math.inf if desc else math.inf
    for b in reversed(order):
        rest[b] = best
        v = bounds[b]
        if desc:
            best = max(best, v)
        elif v:
            best = min(best, v - 1)
    present: list[Row] = []
    blocks = list(order)
    # First read: about as many blocks as hold the page at the matches' density.
    i, rounds = 0, 0
    step = max(1, math.ceil(k * n_blocks / max(total, 1)))
    sorted_handles = list(handles)
    while i < len(blocks):
        chunk = blocks[i : i + step]
        i += len(chunk)
        rounds += 1
        lo_b, hi_b = min(chunk), max(chunk) + 1
        if bitmap:
            data = await ctx.redis.getrange(bitmap, lo_b * zone_size // 8, hi_b * zone_size // 8 - 1)
            found = [lo_b * zone_size + p for p in bit_positions(data, 0, len(data) * 8, False)]
        else:
            found = sorted_handles[
                bisect.bisect_left(sorted_handles, lo_b * zone_size) : bisect.bisect_left(
                    sorted_handles, hi_b * zone_size
                )
            ]
        present += await values(ctx, plan, found)
        step = min(step * 4, 256)
        if len(present) >= k:
            present.sort(key=lambda row: row[0], reverse=desc)
            kth = present[k - 1][0]
            bound = rest[chunk[-1]]
            if (kth > bound) if desc else (kth < bound):
                break
    ids = await arrange(ctx, plan, present, [], {}, False)
    how = f"scanned {len(present)} matches in handle order in {rounds} reads, bounded by the {field} zone map"
    return Page(total=total, job_ids=ids, strategy=how)
