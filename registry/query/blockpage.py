"""A deep filtered page across partitions, read block by block (issue 14; the search is registry/query/blockrank.py).

For a filtered listing ordered by created_at, updated_at, start/end_timestamp or creation_order at a
deep offset: each partition builds its filter bitmap once (the executor's own ``filter_bitmap``) and
AND-s it with the order's not-null bitmap; then, one pipeline per server each step: every partition's
total, that bitmap and the order's zone maps; the column spans of the blocks in the page's value
window; the ids of the rows at the page's values (ties included); the page's records. Five steps
whatever the offset, no per-value totals over the bit-sliced index and no rank probes. None (the
caller's other paths answer) when the page reaches the nulls of a nullable order, or a block holding
matches has no zone bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from registry.domain.model import Job
from registry.query import blockrank
from registry.query.bits import uuid_text
from registry.query.context import QueryContext
from registry.query.execute.filters import filter_bitmap
from registry.query.merge import key_of, renumber
from registry.query.planner import Plan, prune
from registry.query.spec import OrderBy
from registry.store.indexes import NULLABLE_COLUMNS

if TYPE_CHECKING:
    from registry.query.partitioned import Partitioned

# Orders whose values a partition bounds per block of handles: the zone-mapped columns, and creation_order
# (the handle itself). runs has no zone map; id is not a column.
BLOCKWISE = frozenset(
    {OrderBy.CREATED_AT, OrderBy.UPDATED_AT, OrderBy.START_TIMESTAMP, OrderBy.END_TIMESTAMP, OrderBy.CREATION_ORDER}
)


def blockwise(p: Plan) -> bool:
    """Whether a deep page of ``p`` (with filters) is read block by block."""
    return bool(p.predicates) and p.order in BLOCKWISE


async def _matches(scatter: Partitioned, stack: AsyncExitStack, i: int, p: Plan) -> tuple[str, str] | None:
    """Partition ``i``'s filter bitmap and its matches with an order value (temporary keys of ``stack``'s
    contexts); None when the partition's indexes show no match."""
    ex = scatter.executor(i)
    await ex.scripts.load()
    sizes, _ = await ex._sizes(p.predicates, position=False)
    pruned = prune(p, sizes)
    if pruned.empty:
        return None
    ctx = await stack.enter_async_context(QueryContext(ex.redis, ex.keys, ex.settings, ex.scripts))
    f = await filter_bitmap(ctx, pruned.predicates, sizes)
    return f, (await ctx.bitop("AND", [f, p.nonnull]) if p.nonnull is not None else f)


def _get(key: str) -> Any:
    return lambda pipe, ex: pipe.get(key)


def _bitcount(key: str) -> Any:
    return lambda pipe, ex: pipe.bitcount(key)


def _span(key: str, block: int) -> Any:
    size = blockrank.ZONE_SIZE * 8
    return lambda pipe, ex: pipe.getrange(key, block * size, (block + 1) * size - 1)


async def block_page(
    scatter: Partitioned, plans: dict[int, Plan], offset: int, limit: int
) -> tuple[list[Job], int, str] | None:
    """The page at ``offset`` of the partitions' ``plans`` (one query's), its total and how it was found."""
    first = next(iter(plans.values()))
    async with AsyncExitStack() as stack:
        made = await asyncio.gather(*(_matches(scatter, stack, i, p) for i, p in plans.items()))
        bitmaps = {i: m for i, m in zip(plans, made, strict=True) if m is not None}
        field = first.order.value
        zoned = first.order is not OrderBy.CREATION_ORDER
        calls = []
        for i, (f, valued) in bitmaps.items():
            keys = scatter.partitions.keys[i]
            calls += [(i, _bitcount(f)), (i, _get(valued))]
            if zoned:
                calls += [(i, _get(keys.zone_max(field))), (i, _get(keys.zone_min(field)))]
        replies = await scatter._each(calls)
        step = 4 if zoned else 2
        got = {i: replies[k * step : (k + 1) * step] for k, i in enumerate(bitmaps)}
        total = sum(int(r[0]) for r in got.values())
        if offset >= total:
            return [], total, "block search: offset past the end"
        last = min(offset + limit, total) - 1
        blocks = _blocks(scatter.partitions.count, got, first.desc, zoned)
        if blocks is None or last >= sum(b.matches for b in blocks):
            return None  # the page reaches the nulls (or the zone maps do not cover a match)
        win = blockrank.window(blocks, offset, last)
        rows = await _rows(scatter, win.blocks, got, field, first.desc, zoned)
        values = [w for w, _, _ in rows]
        a, b, before = blockrank.page_span(values, win.below, offset, last)
        lo, hi = blockrank.in_span(values, a, b)
        page = await _page(scatter, rows[lo:hi], first.desc, offset - before, limit)
    how = f"block search: {len(win.blocks)} blocks read, {hi - lo} rows at the page's values"
    return page, total, how


def _blocks(partitions: int, got: dict[int, list[Any]], desc: bool, zoned: bool) -> list[blockrank.Block] | None:
    out: list[blockrank.Block] = []
    for i, reply in got.items():
        bitmap = reply[1] or b""
        if zoned:
            found = blockrank.zone_blocks(i, bitmap, reply[2] or b"", reply[3] or b"", desc)
            if found is None:
                return None
            out += found
        else:
            out += blockrank.handle_blocks(i, partitions, bitmap, desc)
    return out


async def _rows(
    scatter: Partitioned,
    blocks: Sequence[blockrank.Block],
    got: dict[int, list[Any]],
    field: str,
    desc: bool,
    zoned: bool,
) -> list[tuple[int, int, int]]:
    """(value in the listing's direction, partition, handle) of the blocks' matches, sorted by value."""
    rows: list[tuple[int, int, int]] = []
    if zoned:
        shift = 1 if field in NULLABLE_COLUMNS else 0  # the column stores a nullable value + 1 (0: null)
        spans = await scatter._each(
            [(b.part, _span(scatter.partitions.keys[b.part].column(field), b.number)) for b in blocks]
        )
        for b, span in zip(blocks, spans, strict=True):
            rows += [
                (w, b.part, h) for w, h in blockrank.block_rows(b, got[b.part][1] or b"", span or b"", desc, shift)
            ]
    else:
        for b in blocks:
            rows += [
                (w, b.part, h)
                for w, h in blockrank.handle_rows(b, got[b.part][1] or b"", scatter.partitions.count, desc)
            ]
    rows.sort()
    return rows


async def _page(
    scatter: Partitioned, group: Sequence[tuple[int, int, int]], desc: bool, skip: int, limit: int
) -> list[Job]:
    """Rows ``skip`` .. ``skip + limit - 1`` of ``group`` (the rows at the page's values) in (value, id)
    order, rendered: their ids read by handle, then their records, each from its partition."""
    handles: dict[int, list[int]] = {}
    for _, i, h in group:
        handles.setdefault(i, []).append(h)

    async def ids(i: int, hs: list[int]) -> list[str]:
        ex = scatter.executor(i)
        raw = await ex.scripts.uuids(ex.keys.uuids, hs, 1000)
        return [uuid_text(raw[k * 16 : k * 16 + 16]) for k in range(len(hs))]

    found = await asyncio.gather(*(ids(i, hs) for i, hs in handles.items()))
    id_of = {
        (i, h): job_id
        for (i, hs), got in zip(handles.items(), found, strict=True)
        for h, job_id in zip(hs, got, strict=True)
    }
    keyed = sorted((key_of(-w if desc else w, id_of[(i, h)], desc), i, id_of[(i, h)]) for w, i, h in group)
    chosen = keyed[skip : skip + limit]
    by_part: dict[int, list[str]] = {}
    for _, i, job_id in chosen:
        by_part.setdefault(i, []).append(job_id)
    reads = await asyncio.gather(*(scatter.executor(i).jobs(ids) for i, ids in by_part.items()))
    jobs = {
        job.id: job
        for i, rendered in zip(by_part, reads, strict=True)
        for job in renumber([j for j in rendered if j is not None], scatter.partitions.count, i)
    }
    return [jobs[job_id] for _, _, job_id in chosen if job_id in jobs]
