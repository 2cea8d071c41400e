"""Range filters as bitmaps: from a zone map when its blocks decide almost every job, else by bit-sliced index."""

from __future__ import annotations

import math
from typing import Any

from registry.query import cost
from registry.query.bits import i64s
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.planner import Range
from registry.store import indexes
from registry.store.indexes import BSI_OF_ORDER, RUNS_BITS, SECOND_BITS, SECOND_US


async def range_into(ctx: QueryContext, dest: str, zset: str, kind: str, lo: Any, hi: Any) -> None:
    """Set in ``dest`` the handles of a sort index's members in a lex or score range, a chunk per call.

    The range's size is counted first, then every chunk's call goes out in one round trip;
    a range that grew meanwhile is read on until a chunk comes back short.
    """
    if kind == "lex":
        below = b"(" + lo[1:]  # lex bounds here are inclusive ('[x')
        (size,) = await ctx.scripts.sort_lexcounts(zset, [(lo, hi)])
    else:
        below = f"({lo}"
        size = await ctx.scripts.sort_count(zset, lo, hi)
    step, offset = ctx.settings.walk_chunk, 0
    while True:
        offsets = list(range(offset, max(size, offset + 1), step))
        read = await ctx.scripts.range_to_bitmap(dest, zset, kind, below, lo, hi, offsets, step, TEMP_TTL_MS)
        offset += sum(read)
        if read[-1] < step:
            return


async def range_bitmap(ctx: QueryContext, pred: Range) -> str:
    """The jobs in a range: from the zone map when its blocks decide almost all of them, else by BSI."""
    if cost.zone_map_tried(pred):
        zoned = await _zone_range_bitmap(ctx, pred)
        if zoned is not None:
            return zoned
    return await _bsi_range_bitmap(ctx, pred)


async def _zone_range_bitmap(ctx: QueryContext, pred: Range) -> str | None:
    """Blocks whose bounds lie inside the range are taken whole, blocks outside skipped, and only
    the few straddling a boundary read from the column; None when too many straddle."""
    zone_size = indexes.ZONE_SIZE
    field = pred.field
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.get(ctx.keys.zone_max(field))
    pipe.get(ctx.keys.zone_min(field))
    highs, lows = (i64s(raw or b"") for raw in await pipe.execute())
    lo = -math.inf if pred.lo is None else pred.lo
    hi = math.inf if pred.hi is None else pred.hi
    whole: list[int] = []
    straddling: list[int] = []
    for b, (high, low) in enumerate(zip(highs, lows, strict=False)):
        if low == 0 or high < lo or low - 1 > hi:
            continue  # no value in the block, or none in range
        (whole if lo <= low - 1 and high <= hi else straddling).append(b)
    if not cost.zone_map_pays(len(straddling)):
        return None
    block_bytes = zone_size // 8
    bits = bytearray(len(highs) * block_bytes)
    for b in whole:
        bits[b * block_bytes : (b + 1) * block_bytes] = b"\xff" * block_bytes
    pipe = ctx.redis.pipeline(transaction=False)
    for b in straddling:
        pipe.getrange(pred.column, b * zone_size * 8, (b + 1) * zone_size * 8 - 1)
    # Nullable columns hold value + 1 (0 for null, which no range admits).
    shift = 1 if pred.nullable else 0
    low_stored, high_stored = max(lo + shift, shift), hi + shift
    for b, raw in zip(straddling, await pipe.execute(), strict=True):
        base = b * zone_size
        for j in [j for j, v in enumerate(i64s(raw)) if low_stored <= v <= high_stored]:
            h = base + j
            bits[h >> 3] |= 0x80 >> (h & 7)
    dest = ctx.temp()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.set(dest, bytes(bits), px=TEMP_TTL_MS)
    # Whole blocks include their jobs without a value (null start or end) and unused handles: drop them.
    pipe.bitop("AND", dest, dest, _having_value(ctx, pred))
    await pipe.execute()
    return dest


def _having_value(ctx: QueryContext, pred: Range) -> str:
    """The bitmap of the listed jobs that have a value of the range's field."""
    return {"start_timestamp": ctx.keys.started, "end_timestamp": ctx.keys.ended}.get(pred.field, ctx.keys.all)


async def _bsi_range_bitmap(ctx: QueryContext, pred: Range) -> str:
    """A range over a bit-sliced index, exact to the second, plus the boundary second from the sort set."""
    width, scale = (RUNS_BITS, 1) if pred.field == "runs" else (SECOND_BITS, SECOND_US)
    exists = _having_value(ctx, pred)
    slices = [ctx.keys.slice(BSI_OF_ORDER[pred.field], i) for i in range(width)]
    present = await existing(ctx, slices)
    parts: list[str] = []
    if pred.lo is not None:
        lo = -(-pred.lo // scale)  # whole units >= lo
        parts.append(await _bsi_compare(ctx, slices, present, exists, lo, ge=True))
    if pred.hi is not None:
        hi = (pred.hi + 1) // scale - 1  # whole units entirely <= hi
        parts.append(await _bsi_compare(ctx, slices, present, exists, hi, ge=False))
    result = parts[0] if len(parts) == 1 else await ctx.bitop("AND", parts)
    if scale == 1:
        return result
    # The partial second at the boundary, read exactly from the sort set (a few jobs).
    boundary = ctx.temp()
    if pred.lo is not None:
        await range_into(ctx, boundary, pred.zset, "score", pred.lo, lo * scale - 1)
    if pred.hi is not None:
        await range_into(ctx, boundary, pred.zset, "score", (hi + 1) * scale, pred.hi)
    return await ctx.bitop("OR", [result, boundary])


async def existing(ctx: QueryContext, keys: list[str]) -> list[bool]:
    """Which of ``keys`` exist (a BSI slice no value sets is never written)."""
    pipe = ctx.redis.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k)
    return [bool(x) for x in await pipe.execute()]


async def _bsi_compare(
    ctx: QueryContext, slices: list[str], present: list[bool], exists: str, c: int, *, ge: bool
) -> str:
    """Jobs with value >= c (ge) or <= c, by O'Neil's bit-sliced comparison.

    Uses only AND/OR/XOR (``eq AND NOT b`` is ``eq XOR (eq AND b)``), because BITOP NOT
    of a short bitmap would miss the handles past its end.
    """
    if c < 0:
        return exists if ge else ctx.temp()
    if c >= 1 << len(slices):
        return ctx.temp() if ge else exists
    acc = ctx.temp()  # GT (ge) or LT (le), starts empty
    eq = ctx.temp()
    t = ctx.temp()
    n = ctx.temp()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.bitop("OR", eq, exists)
    eq_empty = False
    for i in reversed(range(len(slices))):
        bit = (c >> i) & 1
        b = slices[i]
        if not present[i]:
            if bit:
                if not ge:
                    pipe.bitop("OR", acc, acc, eq)
                eq_empty = True
                break
            continue
        pipe.bitop("AND", t, eq, b)
        if ge and bit:
            pipe.bitop("OR", eq, t)
        elif ge:
            pipe.bitop("OR", acc, acc, t)  # above c from here on
            pipe.bitop("XOR", eq, eq, t)
        elif bit:
            pipe.bitop("XOR", n, eq, t)  # eq AND NOT b: below c from here on
            pipe.bitop("OR", acc, acc, n)
            pipe.bitop("OR", eq, t)
        else:
            pipe.bitop("XOR", eq, eq, t)
    if not eq_empty:
        pipe.bitop("OR", acc, acc, eq)
    for k in (acc, eq, t, n):
        pipe.pexpire(k, TEMP_TTL_MS)
    await pipe.execute()
    return acc
