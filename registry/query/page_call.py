"""The PAGE protocol: a plan's filter program and page request built here, run by lua/page.lua, and its reply;
and the reply tail PAGE and PICK share (lua/reply.lua): the change log's position and the page's records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from registry.keys import Keys
from registry.live.changes import Position, parse_position
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
    ``position``: the change log's, read in the same call. ``records``: ``done`` only, the
    page's records as flat (handle, state) pairs (as RECORDS returns them); else empty.
    """

    done: bool
    total: int
    first: int
    listed: int
    phase: int
    rank: int
    skip: int
    position: Position
    items: list[bytes]
    records: list[Any]


class PickReply(msgspec.Struct, frozen=True):
    """PICK's reply: ``done`` with the total, the page's uuids and their records (flat (handle,
    state) pairs); or not ``done`` (the driver grew past the cap), with the position only."""

    done: bool
    position: Position
    total: int = 0
    uuids: list[bytes] = msgspec.field(default_factory=list)
    records: list[Any] = msgspec.field(default_factory=list)


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
    call_keys += [id_sort, filter_key, scratch_key, plan.order_column or keys.uuids, keys.changes]

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
    args += [budget, walk_limit, ttl_ms, collect_limit, collect_order(plan), keys.job_prefix(), *ops]
    return PageCall(tuple(call_keys), tuple(args))


def collect_order(plan: Plan) -> str:
    """How lua/checklib.lua's order_page orders the plan's matches: 'value', 'nullable', 'handle' or 'id'."""
    if plan.order is OrderBy.CREATION_ORDER:
        return "handle"
    if plan.order is OrderBy.ID:
        return "id"
    return "value" if plan.nonnull is None else "nullable"


def reply_position(raw: bytes | str) -> Position:
    """The position a script read (lua/reply.lua: a stream entry id, '0-0' before the first change)."""
    position = parse_position(raw.decode() if isinstance(raw, bytes) else raw)
    assert position is not None, raw
    return position


def page_reply(reply: Sequence[Any]) -> PageReply:
    """Decode PAGE's flat reply."""
    done, total, first, listed, phase, rank, skip = (int(x) for x in reply[:7])
    position, rest = reply_position(reply[7]), list(reply[8:])
    # Done: n items then their n (handle, state) pairs.
    n = len(rest) // 3 if done else len(rest)
    return PageReply(bool(done), total, first, listed, phase, rank, skip, position, rest[:n], rest[n:])


def pick_reply(reply: Sequence[Any]) -> PickReply:
    """Decode PICK's flat reply."""
    position = reply_position(reply[1] if not int(reply[0]) else reply[2])
    if not int(reply[0]):
        return PickReply(False, position)
    rest = list(reply[3:])
    n = len(rest) // 3  # n uuids then their n (handle, state) pairs
    return PickReply(True, position, int(reply[1]), rest[:n], rest[n:])
