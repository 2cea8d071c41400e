"""Strategy step: check known handles against predicates in bounded chunks, then sort the matches here."""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Sequence

import msgspec

from registry.query import cost
from registry.query.check import CheckProgram, CheckRow, compile_check
from registry.query.context import TEMP_TTL_MS, QueryContext
from registry.query.execute.rows import Row, arrange
from registry.query.execute.scan import scan
from registry.query.page_call import collect_order
from registry.query.planner import AnyBit, IdIn, IdPrefix, Plan, Predicate
from registry.query.spec import OrderBy, Page


async def collect(
    ctx: QueryContext,
    plan: Plan,
    handles: list[int],
    preds: Sequence[Predicate],
    known: dict[int, bytes] | None = None,
    how: str = "",
) -> Page:
    """Check ``handles`` against ``preds`` in bounded chunks, then order the matches and cut the page."""
    known = dict(known or {})
    id_sets = [{_uuid.UUID(i).bytes for i in p.ids} for p in preds if isinstance(p, IdIn)]
    prefixes = [p.text for p in preds if isinstance(p, IdPrefix)]
    by_id = plan.order is OrderBy.ID
    want_uuid = (by_id or bool(id_sets or prefixes)) and not (known and all(h in known for h in handles))
    nullable = plan.nonnull is not None
    present: list[Row] = []
    nulls: list[int] = []
    step = cost.check_chunk(preds, plan.order_column, ctx.settings.walk_chunk)
    if not preds and plan.order is OrderBy.CREATION_ORDER:
        present = [(h, h) for h in handles]  # nothing to check and the handle is the order
        handles = []
    elif not preds and by_id and not want_uuid:
        present = [(known[h], h) for h in handles]  # nothing to check and every uuid at hand
        handles = []
    elif not preds and len(handles) > plan.offset + plan.limit and cost.scan_pays(plan, len(handles), 0, ctx.settings):
        page = await scan(ctx, plan, len(handles), handles=handles)
        return msgspec.structs.replace(page, strategy=f"{how}; {page.strategy}")
    preds = await _pre_or(ctx, preds, len(handles))
    program = compile_check(ctx.keys.uuids, plan.order_column, preds)
    rows, nulls, present_total = await _check(ctx, plan, program, handles, step, want_uuid, bool(id_sets or prefixes))
    for h, value, uid in rows:
        if uid is not None:
            known[h] = uid
        if id_sets or prefixes:
            uid = known[h]
            if any(uid not in ids for ids in id_sets):
                continue
            if any(not str(_uuid.UUID(bytes=uid)).startswith(p) for p in prefixes):
                continue
        if by_id:
            present.append((known[h], h))
        elif nullable and value == 0:
            nulls.append(h)
        else:
            present.append((value - 1 if nullable else value, h))
    if present_total is None:
        present_total = len(present)
    total = present_total + len(nulls)
    unique = plan.order in (OrderBy.ID, OrderBy.CREATION_ORDER)
    ids = await arrange(ctx, plan, present, nulls, known, unique, present_total)
    return Page(total=total, job_ids=ids, strategy=f"{how}; {total} matches sorted here")


async def _check(
    ctx: QueryContext,
    plan: Plan,
    program: CheckProgram,
    handles: list[int],
    step: int,
    want_uuid: bool,
    tested_here: bool,
) -> tuple[list[CheckRow], list[int], int | None]:
    """CHECK of ``handles`` in chunks of ``step``: (rows, nulls, matches with an order value). When the
    page's depth (offset + limit) is below a call's candidates, each call returns only its matches
    that can be in the page and counts the rest (top mode; nulls apart, the count then not None);
    otherwise every match comes back as a row (nulls among them), as when ids are tested here after
    the check (``tested_here``)."""
    k = plan.offset + plan.limit
    if tested_here or len(handles) <= k or step <= k:
        # (No call could leave a row out: its candidates are no more than the page's depth.)
        return await ctx.scripts.check_chunks(program, handles, step, want_uuid), [], None
    order = collect_order(plan)
    got = await ctx.scripts.check_top_chunks(program, handles, step, want_uuid, top=k, order=order, desc=plan.desc)
    return got.rows, got.nulls, got.present


async def _pre_or(ctx: QueryContext, preds: Sequence[Predicate], candidates: int) -> list[Predicate]:
    """``preds`` with each list of statuses or origins OR-ed into one temporary bitmap first when
    that costs less than testing each of its bitmaps per candidate (cost.pre_or_pays); one round trip."""
    out: list[Predicate] = []
    pipe = ctx.redis.pipeline(transaction=False)
    for pred in preds:
        if isinstance(pred, AnyBit) and len(pred.keys) > 1 and cost.pre_or_pays(len(pred.keys), candidates):
            dest = ctx.temp()
            pipe.bitop("OR", dest, *pred.keys)
            pipe.pexpire(dest, TEMP_TTL_MS)
            pred = AnyBit((dest,))
        out.append(pred)
    if len(pipe):
        await pipe.execute()
    return out
