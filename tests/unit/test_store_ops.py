"""The index ops protocol: wire shape, round trip, and every key named through the call's KEYS."""

from __future__ import annotations

import uuid

from registry.domain.model import Origin, Status
from registry.keys import Keys
from registry.lua import source
from registry.store.indexes import Row, index_ops
from registry.store.ops import (
    FlipBits,
    KeyTable,
    Member,
    SetBit,
    SetColumn,
    SortAdd,
    SortRemove,
    WidenZone,
    decode_ops,
    encode_ops,
)


def test_ops_travel_as_tagged_arrays() -> None:
    ops = [
        SetBit(4, 1),
        FlipBits([5, -6]),
        SortAdd(7, "12", ""),
        SortRemove(7, "12"),
        SetColumn(8, "3"),
        WidenZone(9, "10", "11", 1024, 10),
        Member(11, 12, 0),
    ]
    wire = encode_ops(ops)
    assert wire == (
        b'[["B",4,1],["S",[5,-6]],["Z",7,"12",""],["z",7,"12"],["C",8,"3"],["Q",9,"10","11",1024,10],["M",11,12,0]]'
    )
    assert decode_ops(wire) == ops


def test_key_table_numbers_keys_from_one_and_once() -> None:
    table = KeyTable(["a", "b"])
    assert (table["b"], table["c"], table["c"], table["a"]) == (2, 3, 3, 1)
    assert table.names == ["a", "b", "c"]


def _row(**changes: object) -> Row:
    base: dict[str, object] = dict(
        uuid16=uuid.UUID(int=1).bytes,
        status=Status.PENDING,
        origin=Origin.CLIENT,
        has_errors=False,
        project_id="p",
        batch_id="b",
        user_id="u",
        runs=5,
        created_at=3_000_000,
        updated_at=3_000_000,
        start_timestamp=None,
        end_timestamp=None,
    )
    return Row(**{**base, **changes})  # type: ignore[arg-type]


def test_every_key_an_op_touches_is_in_keys() -> None:
    keys = Keys("t")
    table = KeyTable([keys.seq, keys.uuids, keys.changes, keys.job("j")])
    old = _row()
    new = _row(status=Status.DONE, start_timestamp=4_000_000, end_timestamp=9_000_000, user_id="v")
    ops = index_ops(keys, table, None, old) + index_ops(keys, table, old, new)
    used = set()
    for op in ops:
        if isinstance(op, FlipBits):
            used |= {abs(k) for k in op.flips}
        elif isinstance(op, WidenZone):
            used |= {op.max_key, op.min_key}
        elif isinstance(op, Member):
            used |= {op.set_key, op.bitmap_key}
        else:
            used.add(op.key)
    assert used <= set(range(5, len(table.names) + 1))  # index keys only, never the fixed ones
    # start: 4 s, binary 100
    assert keys.slice("start", 2) in table.names and keys.member_set("user", "v") in table.names
    assert all(k.startswith("{t}:") for k in table.names)  # one hash slot


def test_apply_script_reads_every_op_tag() -> None:
    script = source("registry.store", "apply")
    for tag in "BSZzCQM":
        assert f"kind == '{tag}'" in script


def test_key_table_enters_keys_in_bulk_as_one_by_one() -> None:
    bulk, single = KeyTable(["a"]), KeyTable(["a"])
    assert bulk.enter(["x", "a", "y", "x"]) == [single["x"], single["a"], single["y"], single["x"]] == [2, 1, 3, 2]
    assert bulk.names == single.names == ["a", "x", "y"] and dict(bulk) == dict(single)
    assert bulk.enter([]) == [] and bulk["z"] == 4
