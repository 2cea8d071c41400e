"""What a job contributes to each index, and the ops that move the indexes from one job state to the next."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from registry.domain.model import JobState, Origin, Status
from registry.keys import Keys
from registry.store.ops import FlipBits, KeyTable, Member, Op, SetBit, SetColumn, SortAdd, SortRemove, WidenZone

# Bit-sliced indexes: value -> bitmaps, one per bit, so range filters become a few BITOPs.
RUNS_BITS = 31
SECOND_US = 1_000_000
SECOND_BITS = 34  # seconds since 1970, up to year 2514
SORT_FIELDS = ("created_at", "updated_at", "start_timestamp", "end_timestamp", "runs", "id")
# Bumped whenever what the projection stores changes shape (index ops, key names, record
# encoding). Stored in Redis (registry/store/layout.py): the API and workers refuse another
# one, and `jobreg migrate` (registry/store/migrate.py) moves a registry to this one; the
# benchmark's kept copies (--keep) carry it too. 5: the id's first hex digit as bitmaps.
# 6: job records (and change-log states) in the compact codec of registry/store/record.py.
# 7: the six sort sets as bucketed sort indexes (registry/store/lua/sortlib.lua, Keys.sort).
# 8: a zone map of updated_at (walks ordered by it start near the matches, like the others).
LAYOUT = 8

# Per-handle value columns, so a small candidate set is filtered and sorted without a sort-set
# lookup per job. Nullable values are stored as value + 1, with 0 for null.
COLUMNS = ("created_at", "updated_at", "start_timestamp", "end_timestamp", "runs")
NULLABLE_COLUMNS = frozenset({"start_timestamp", "end_timestamp"})
# Zone maps: per block of ZONE_SIZE handles, bounds of these fields' values. Handles follow
# arrival, and so do these timestamps, so a block's bounds are tight and a scan in handle
# order can stop as soon as no unread block can beat the page found so far.
# updated_at only grows (a job's latest event), so widening its block on every change keeps the
# max exact and leaves the min at the block's earliest value ever seen: too low, still a bound.
ZONE_SIZE = 1024
ZONE_FIELDS = ("created_at", "updated_at", "start_timestamp", "end_timestamp")
# Order fields with a bit-sliced index (seconds, or runs): deep offsets select by counting.
BSI_OF_ORDER = {"created_at": "created", "start_timestamp": "start", "end_timestamp": "end", "runs": "runs"}


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """The indexed view of a listed job (one whose `created` event has been applied)."""

    uuid16: bytes
    status: Status
    origin: Origin
    has_errors: bool
    project_id: str
    batch_id: str
    user_id: str
    runs: int
    created_at: int
    updated_at: int
    start_timestamp: int | None
    end_timestamp: int | None


def row_of(state: JobState) -> Row | None:
    c = state.created
    if c is None or not state.listed:
        return None
    assert state.updated_at is not None  # listed implies it; narrows the type
    t = state.terminal
    return Row(
        # Job ids are canonical text (decode_event): uuid.UUID's parsing and checks cost more.
        uuid16=bytes.fromhex(state.job_id.replace("-", "")),
        status=state.status,
        origin=c.origin,
        has_errors=bool(t and t.errors),
        project_id=c.project_id,
        batch_id=c.batch_id,
        user_id=c.user_id,
        runs=c.runs,
        created_at=c.occurred_at,
        updated_at=state.updated_at,
        start_timestamp=state.start_timestamp,
        end_timestamp=t.occurred_at if t else None,
    )


def sort_score(row: Row, field: str) -> int | None:
    # The Row attribute of the same name; "id" is ordered by member, which starts with the uuid
    # bytes. An attribute read, not a dict of every field: the apply path asks ~20 times per job.
    return 0 if field == "id" else getattr(row, field)


def column_value(row: Row, field: str) -> int:
    return column_values((row,), field)[0]


def column_values(rows: Sequence[Row], field: str) -> list[int]:
    """What each row stores in ``field``'s value column (one pass for a run of fresh jobs)."""
    values = [sort_score(row, field) for row in rows]
    if field in NULLABLE_COLUMNS:
        return [0 if value is None else value + 1 for value in values]
    return values  # type: ignore[return-value]  # non-nullable fields are never None


def _bitmaps(keys: Keys, row: Row | None) -> dict[str, int]:
    """Every plain bitmap the job's handle is set in (1) or clear in (0)."""
    if row is None:
        return {}
    return {
        keys.all: 1,
        keys.status[row.status]: 1,
        keys.origin[row.origin]: 1,
        keys.errors: int(row.has_errors),
        keys.started: int(row.start_timestamp is not None),
        keys.ended: int(row.end_timestamp is not None),
        keys.id_hex[first_hex(row.uuid16)]: 1,
    }


def first_hex(uuid16: bytes) -> str:
    """The first hex digit of the id's text: the high nibble of its first byte."""
    return "0123456789abcdef"[uuid16[0] >> 4]


def _sliced(row: Row | None) -> dict[str, int]:
    """The value each bit-sliced index holds for the job; null sets no bit, like 0."""
    if row is None:
        return {}
    return {
        "runs": row.runs,
        "created": row.created_at // SECOND_US,
        "start": 0 if row.start_timestamp is None else row.start_timestamp // SECOND_US,
        "end": 0 if row.end_timestamp is None else row.end_timestamp // SECOND_US,
    }


def _flips(key: Callable[[str], int], names: list[str], old: int, new: int) -> list[int]:
    """FlipBits' list: for each slice bit that differs (lowest first), its key's index in the
    call, positive to set the bit, negative to clear it. Visits only the differing bits."""
    out, diff = [], old ^ new
    while diff:
        low = diff & -diff
        k = key(names[low.bit_length() - 1])
        out.append(k if new & low else -k)
        diff ^= low
    return out


def sort_ops(keys: Keys, table: KeyTable, old: Row | None, new: Row | None) -> list[Op]:
    """The sort-set part of ``index_ops``: the only ops a fresh job still sends per job (the rest of
    what it contributes travels column-wise, registry/store/fresh.py)."""
    key = table.__getitem__
    ops: list[Op] = []
    for field in SORT_FIELDS:
        b_score = sort_score(old, field) if old else None
        a_score = sort_score(new, field) if new else None
        if a_score is not None and (a_score != b_score or old is None):
            moved = old is not None and b_score is not None
            ops.append(SortAdd(key(keys.sort(field)), str(a_score), str(b_score) if moved else ""))
        elif a_score is None and b_score is not None:
            ops.append(SortRemove(key(keys.sort(field)), str(b_score)))
    return ops


BSI_WIDTH = {"runs": RUNS_BITS, "created": SECOND_BITS, "start": SECOND_BITS, "end": SECOND_BITS}
# Which Row field holds the value of each member kind (the kind names stay in key names).
MEMBER_FIELDS = {"project": "project_id", "batch": "batch_id", "user": "user_id"}


def index_ops(  # noqa: C901  one flat diff per index family, in the layout's order
    keys: Keys, table: KeyTable, old: Row | None, new: Row | None
) -> list[Op]:
    """The apply script's ops (registry/store/ops.py) that move every index from ``old`` to ``new``.

    ``table`` turns each key name into its index in the call's KEYS.
    """
    key = table.__getitem__
    ops: list[Op] = []
    before, after = _bitmaps(keys, old), _bitmaps(keys, new)
    for name in sorted(before.keys() | after.keys()):
        b, a = before.get(name, 0), after.get(name, 0)
        if a != b:
            ops.append(SetBit(key(name), a))
    sliced_before, sliced_after = _sliced(old), _sliced(new)
    for field in BSI_WIDTH:
        b, a = sliced_before.get(field, 0), sliced_after.get(field, 0)
        if a != b:
            ops.append(FlipBits(_flips(key, keys.slices(field, BSI_WIDTH[field]), b, a)))
    ops += sort_ops(keys, table, old, new)
    if new is not None:
        for field in COLUMNS:
            value = column_value(new, field)
            if old is None or column_value(old, field) != value:
                ops.append(SetColumn(key(keys.column(field)), str(value)))
        for field in ZONE_FIELDS:
            zoned = sort_score(new, field)
            if zoned is not None and (old is None or sort_score(old, field) != zoned):
                ops.append(
                    WidenZone(
                        key(keys.zone_max(field)), str(zoned), str(zoned + 1), ZONE_SIZE, key(keys.zone_min(field))
                    )
                )
    for kind, attr in MEMBER_FIELDS.items():
        b_val = getattr(old, attr) if old else None
        a_val = getattr(new, attr) if new else None
        if b_val == a_val:
            continue
        if b_val is not None:
            ops.append(Member(key(keys.member_set(kind, b_val)), key(keys.member_bitmap(kind, b_val)), 0))
        if a_val is not None:
            ops.append(Member(key(keys.member_set(kind, a_val)), key(keys.member_bitmap(kind, a_val)), 1))
    return ops
