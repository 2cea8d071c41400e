"""The CHECK protocol: the predicate program built here and run by lua/check.lua, and its reply rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from registry.query.planner import AnyBit, Members, NoBit, Predicate, Range

# An open end of a range: beyond any column value.
OPEN_BOUND = 1 << 62


class CheckProgram(msgspec.Struct, frozen=True):
    """KEYS and program ARGV of a CHECK call (see the header of lua/check.lua).

    ``keys`` starts with the uuid array and the order column ('' orders by handle); the
    ops refer to the rest of ``keys`` by their 1-based index, as Lua's KEYS does.
    """

    keys: tuple[str, ...]
    ops: tuple[str | int, ...]


class CheckRow(NamedTuple):
    """One job that passed: its handle, order value (stored form) and uuid bytes (when asked)."""

    handle: int
    value: int
    uuid: bytes | None


def compile_check(uuids: str, order_column: str | None, preds: Sequence[Predicate]) -> CheckProgram:
    """The CHECK program of ``preds`` (id and id-prefix predicates are not ops: the caller tests uuids)."""
    # No order column: the uuid array again, never '' (a declared key, so it must be in the tag's slot).
    keys = [uuids, order_column or uuids]

    def ref(key: str) -> int:
        keys.append(key)
        return len(keys)

    ops: list[str | int] = []
    for pred in preds:
        if isinstance(pred, AnyBit):
            ops += ["A", len(pred.keys), *[ref(k) for k in pred.keys]]
        elif isinstance(pred, NoBit):
            ops += ["N", ref(pred.key)]
        elif isinstance(pred, Members):
            ops += ["M", len(pred.sets)]
            for s, b in zip(pred.sets, pred.bitmaps, strict=True):
                ops += [ref(s), ref(b)]
        elif isinstance(pred, Range):
            lo = -OPEN_BOUND if pred.lo is None else pred.lo
            hi = OPEN_BOUND if pred.hi is None else pred.hi
            ops += ["R", ref(pred.column), lo, hi, int(pred.nullable)]
    return CheckProgram(tuple(keys), tuple(ops))


class CheckTop(NamedTuple):
    """CHECK in top mode, over every call: how many matches have an order value (``present``), the
    rows of those that can be among the first k (each call's first k and its ties, see lua/check.lua)
    and every null's handle (a nullable order's matches without a value)."""

    present: int
    rows: list[CheckRow]
    nulls: list[int]


def check_top(replies: Sequence[Sequence[Any]], want_uuid: bool) -> CheckTop:
    """Decode and join the replies of CHECK calls in top mode: {present, nulls, n, n rows, null handles}."""
    width = 3 if want_uuid else 2
    present, rows, nulls = 0, [], []
    for reply in replies:
        n_present, n_nulls, n = int(reply[0]), int(reply[1]), int(reply[2])
        present += n_present
        end = 3 + n * width
        rows += check_rows(reply[3:end], want_uuid)
        nulls += [int(h) for h in reply[end : end + n_nulls]]
    return CheckTop(present, rows, nulls)


def check_rows(reply: Sequence[Any], want_uuid: bool) -> list[CheckRow]:
    """Decode CHECK's flat reply: (handle, value[, uuid]) per match."""
    width = 3 if want_uuid else 2
    return [
        CheckRow(int(reply[j]), int(reply[j + 1]), reply[j + 2] if want_uuid else None)
        for j in range(0, len(reply), width)
    ]
