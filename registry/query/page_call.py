"""The PAGE protocol: a plan's filter program and page request built here, run by lua/page.lua, and its reply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from registry.keys import Keys
from registry.query.planner import AnyBit, Members, NoBit, Plan
from registry.query.spec import OrderBy

PageMode = Literal["handle", "rank", "walk"]


class PageCall(msgspec.Struct, frozen=True):
    """KEYS and ARGV of one PAGE call (see the header of lua/page.lua)."""

    keys: tuple[str, ...]
    args: tuple[str | int, ...]


class PageReply(msgspec.Struct, frozen=True):
    """PAGE's reply: counts, and either the page (``done``; ``phase`` 1 if its matches were
    collected and sorted, 0 if read in order) or how far its walk got.

    ``items`` start with each job's 16 uuid bytes. Not ``done``: ``phase`` 0 means no walk
    was tried, 1 or 2 that it stopped in the order's sort set or among the nulls (by id) at
    ``rank`` with ``skip`` matches still to skip, ``items`` being the matches found so far.
    """

    done: bool
    total: int
    first: int
    listed: int
    phase: int
    rank: int
    skip: int
    items: list[bytes]


def compile_page(
    keys: Keys,
    plan: Plan,
    sizes: dict[str, int | None],
    mode: PageMode,
    filter_key: str,
    scratch_key: str,
    *,
    budget: int,
    walk_limit: int,
    collect_limit: int,
    ttl_ms: int,
) -> PageCall:
    """The PAGE call of ``plan`` (predicates: AnyBit, NoBit and Members only; see cost.one_call_pays)."""
    id_sort = keys.sort("id")
    call_keys = [keys.all, keys.seq, keys.uuids, plan.order_zset or id_sort, plan.nonnull or keys.all]
    call_keys += [id_sort, filter_key, scratch_key, plan.order_column or keys.uuids]

    def ref(key: str) -> int:
        call_keys.append(key)
        return len(call_keys)

    ops: list[str | int] = []
    for pred in plan.predicates:
        if isinstance(pred, AnyBit):
            ops += ["A", len(pred.keys), *[ref(k) for k in pred.keys]]
        elif isinstance(pred, NoBit):
            ops += ["N", ref(pred.key)]
        else:
            assert isinstance(pred, Members), pred
            pairs = list(zip(pred.sets, pred.bitmaps, strict=True))
            bitmaps = [b for _, b in pairs if sizes.get(b)]
            sets = [s for s, b in pairs if not sizes.get(b) and sizes.get(s)]
            ops += ["M", len(bitmaps), len(sets), *[ref(k) for k in (*bitmaps, *sets)]]
    args: list[str | int] = [plan.offset, plan.limit, int(plan.desc), mode, int(plan.nonnull is not None)]
    args += [budget, walk_limit, ttl_ms, collect_limit, collect_order(plan), *ops]
    return PageCall(tuple(call_keys), tuple(args))


def collect_order(plan: Plan) -> str:
    """How lua/checklib.lua's order_page orders the plan's matches: 'value', 'nullable', 'handle' or 'id'."""
    if plan.order is OrderBy.CREATION_ORDER:
        return "handle"
    if plan.order is OrderBy.ID:
        return "id"
    return "value" if plan.nonnull is None else "nullable"


def page_reply(reply: Sequence[Any]) -> PageReply:
    """Decode PAGE's flat reply."""
    done, total, first, listed, phase, rank, skip = (int(x) for x in reply[:7])
    return PageReply(bool(done), total, first, listed, phase, rank, skip, list(reply[7:]))
