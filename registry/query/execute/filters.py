"""The filter bitmap: one bitmap per predicate, AND-ed, built with pipelined BITOPs and bounded scripts."""

from __future__ import annotations

from collections.abc import Sequence

from registry.query.bits import bitmap_of
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.candidates import candidate_handles
from registry.query.execute.ranges import range_bitmap, range_into
from registry.query.planner import AnyBit, IdIn, IdPrefix, Members, NoBit, Predicate, Range


async def filter_bitmap(ctx: QueryContext, preds: Sequence[Predicate], sizes: dict[str, int | None]) -> str:
    """AND of one bitmap per predicate; the `all` bitmap itself when nothing filters."""
    if not preds:
        return ctx.keys.all
    parts: list[str] = [ctx.keys.all]
    for pred in preds:
        parts.append(await predicate_bitmap(ctx, pred, sizes))
    out = ctx.temp()
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.bitop("AND", out, *parts)
    pipe.pexpire(out, TEMP_TTL_MS)
    await pipe.execute()
    return out


async def predicate_bitmap(ctx: QueryContext, pred: Predicate, sizes: dict[str, int | None]) -> str:
    """The bitmap of the jobs one predicate admits (an index key itself when there is one)."""
    if isinstance(pred, AnyBit):
        if len(pred.keys) == 1:
            return pred.keys[0]
        return await ctx.bitop("OR", list(pred.keys))
    if isinstance(pred, NoBit):
        has = await ctx.bitop("AND", [ctx.keys.all, pred.key])
        return await ctx.bitop("XOR", [ctx.keys.all, has])
    if isinstance(pred, Members):
        sources = [b for b in pred.bitmaps if sizes[b]]
        small = [s for s, b in zip(pred.sets, pred.bitmaps, strict=True) if not sizes[b] and sizes[s]]
        if small:
            sources.append(await _sets_bitmap(ctx, small))
        if not sources:
            return ctx.temp()  # never written: the empty bitmap
        return sources[0] if len(sources) == 1 else await ctx.bitop("OR", sources)
    if isinstance(pred, IdIn):
        tmp = ctx.temp()
        handles, _ = await candidate_handles(ctx, pred, sizes)
        if handles:
            await ctx.scripts.handles_to_bitmap(tmp, handles, TEMP_TTL_MS)
        return tmp
    if isinstance(pred, IdPrefix):
        tmp = ctx.temp()
        await range_into(ctx, tmp, ctx.keys.sort("id"), "lex", *pred.lex_bounds())
        return tmp
    assert isinstance(pred, Range)
    return await range_bitmap(ctx, pred)


async def _sets_bitmap(ctx: QueryContext, sets: list[str]) -> str:
    """One bitmap of the union of small member sets, built here and written with one SET.

    A user in many projects has many small sets; reading them (each below the bitmap
    threshold) and setting the bits in Python beats one SETBIT per member in Lua.
    """
    pipe = ctx.redis.pipeline(transaction=False)
    for s in sets:
        pipe.smembers(s)
    handles = [int(m) for members in await pipe.execute() for m in members]
    dest = ctx.temp()
    await ctx.redis.set(dest, bitmap_of(handles), px=TEMP_TTL_MS)
    return dest
