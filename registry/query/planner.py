"""The pure query planner: a JobQuery becomes a Plan of index predicates, an order and a strategy."""

from __future__ import annotations

import uuid as _uuid
from typing import Literal

import msgspec

from registry.keys import Keys
from registry.query.spec import Direction, JobQuery, OrderBy
from registry.store.indexes import BSI_OF_ORDER, COLUMNS


class AnyBit(msgspec.Struct, frozen=True):
    """The job's handle is set in at least one of these bitmaps (status in ..., origin in ...)."""

    keys: tuple[str, ...]


class NoBit(msgspec.Struct, frozen=True):
    """The job's handle is clear in this bitmap (errors=false)."""

    key: str


class Members(msgspec.Struct, frozen=True):
    """project/batch/user in values: each value indexed by a small set or, once large, a bitmap."""

    kind: str
    sets: tuple[str, ...]
    bitmaps: tuple[str, ...]


class IdIn(msgspec.Struct, frozen=True):
    ids: tuple[str, ...]


class IdPrefix(msgspec.Struct, frozen=True):
    """Lexicographic range of the id sort set (members start with the 16 uuid bytes)."""

    text: str
    lo: bytes
    hi: bytes

    def lex_bounds(self) -> tuple[bytes, bytes]:
        """ZRANGEBYLEX bounds of the range (members continue past the uuid with the 4-byte handle)."""
        return b"[" + self.lo, b"[" + self.hi + b"\xff" * 4


RangeField = Literal["created_at", "runs", "start_timestamp", "end_timestamp"]


class Range(msgspec.Struct, frozen=True):
    """lo <= value <= hi (inclusive, None = open) on runs, start_timestamp or end_timestamp (filters), or
    created_at (a page token's seek bound, registry/query/seek.py); nulls never match."""

    field: RangeField
    zset: str
    column: str  # per-handle values, for checking a few candidates
    nullable: bool
    lo: int | None
    hi: int | None


Predicate = AnyBit | NoBit | Members | IdIn | IdPrefix | Range


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What the executor runs. ``predicates`` are AND-ed; ``empty`` short-circuits to no rows."""

    empty: bool = False
    predicates: tuple[Predicate, ...] = ()
    order: OrderBy
    order_zset: str | None  # None: creation_order, which is the handle itself
    order_column: str | None  # per-handle values of the order field; None for creation_order and id
    order_bsi: str | None  # bit-sliced index of the order field, for deep offsets by counting
    desc: bool
    nonnull: str | None  # bitmap of jobs whose sort value is not null, when it can be null
    offset: int
    limit: int


def prefix_range(text: str) -> tuple[bytes, bytes] | None:
    """Byte bounds of uuids whose canonical text starts with ``text``; None if no uuid can."""
    shape = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    if len(text) > len(shape):
        return None
    for ch, slot in zip(text, shape, strict=False):
        if (slot == "-") != (ch == "-"):
            return None
    nibbles = text.replace("-", "")
    lo = _uuid.UUID(nibbles.ljust(32, "0")).bytes
    hi = _uuid.UUID(nibbles.ljust(32, "f")).bytes
    return lo, hi


def plan(query: JobQuery, keys: Keys) -> Plan:  # noqa: C901  one flat branch per filter, in the query's order
    preds: list[Predicate] = []
    # An empty "any of" list matches nothing (scoping a user to no visible project yields one).
    lists = (query.ids, query.batch_ids, query.project_ids, query.user_ids, query.statuses, query.origins)
    empty = any(values is not None and not values for values in lists)
    if query.ids is not None:
        preds.append(IdIn(tuple(dict.fromkeys(query.ids))))
    if query.id_prefix:
        text = query.id_prefix.lower()
        bounds = prefix_range(text)
        if bounds is None:
            empty = True
        elif text in keys.id_hex:
            # One hex digit: a sixteenth of the jobs, whose bitmap the layout keeps (reading that
            # many sort-set entries to build one would cost ~100 ms at 1M jobs).
            preds.append(AnyBit((keys.id_hex[text],)))
        else:
            preds.append(IdPrefix(text, *bounds))
    for kind, values in (
        ("batch", query.batch_ids),
        ("project", query.project_ids),
        ("user", query.user_ids),
    ):
        if values is not None:
            uniq = tuple(dict.fromkeys(values))
            preds.append(
                Members(
                    kind,
                    tuple(keys.member_set(kind, v) for v in uniq),
                    tuple(keys.member_bitmap(kind, v) for v in uniq),
                )
            )
    if query.statuses is not None:
        preds.append(AnyBit(tuple(keys.status[s] for s in dict.fromkeys(query.statuses))))
    if query.origins is not None:
        preds.append(AnyBit(tuple(keys.origin[o] for o in dict.fromkeys(query.origins))))
    if query.errors is True:
        preds.append(AnyBit((keys.errors,)))
    elif query.errors is False:
        preds.append(NoBit(keys.errors))
    if query.min_runs is not None or query.max_runs is not None:
        if query.min_runs is not None and query.max_runs is not None and query.min_runs > query.max_runs:
            empty = True
        preds.append(Range("runs", keys.sort("runs"), keys.column("runs"), False, query.min_runs, query.max_runs))
    if query.start_date is not None:
        start: RangeField = "start_timestamp"
        preds.append(Range(start, keys.sort(start), keys.column(start), True, query.start_date, None))
    if query.end_date is not None:
        end: RangeField = "end_timestamp"
        preds.append(Range(end, keys.sort(end), keys.column(end), True, None, query.end_date))

    order = query.order_by
    nonnull = {OrderBy.START_TIMESTAMP: keys.started, OrderBy.END_TIMESTAMP: keys.ended}.get(order)
    return Plan(
        empty=empty,
        predicates=tuple(preds),
        order=order,
        order_zset=None if order is OrderBy.CREATION_ORDER else keys.sort(order.value),
        order_column=keys.column(order.value) if order.value in COLUMNS else None,
        order_bsi=BSI_OF_ORDER.get(order.value),
        desc=query.direction is Direction.DESC,
        nonnull=nonnull,
        offset=query.offset,
        limit=query.limit,
    )


def prune(plan: Plan, sizes: dict[str, int | None]) -> Plan:
    """Drop project/batch/user values that index no job; a list left with none matches nothing.

    A user scoped to hundreds of projects, most of them without jobs, then costs no more than
    the projects that have some.
    """
    preds: list[Predicate] = []
    for pred in plan.predicates:
        if isinstance(pred, Members):
            kept = [(s, b) for s, b in zip(pred.sets, pred.bitmaps, strict=True) if sizes.get(s) or sizes.get(b)]
            if not kept:
                return msgspec.structs.replace(plan, empty=True)
            if len(kept) < len(pred.sets):
                pred = Members(pred.kind, tuple(s for s, _ in kept), tuple(b for _, b in kept))
        preds.append(pred)
    return msgspec.structs.replace(plan, predicates=tuple(preds))


def narrowed(pred: Predicate, sizes: dict[str, int | None]) -> Predicate:
    """A project/batch/user filter whose every value is indexed by a bitmap (past the set threshold) as
    the test of those bitmaps alone (AnyBit), for checking candidates one by one: one bit per value,
    read in windows or prefetched in batches, instead of a SISMEMBER of its empty set as well (a
    command per candidate, which also stops checklib's prefetch). Any other predicate as it is."""
    if isinstance(pred, Members) and all(
        sizes.get(b) and not sizes.get(s) for s, b in zip(pred.sets, pred.bitmaps, strict=True)
    ):
        return AnyBit(pred.bitmaps)
    return pred
