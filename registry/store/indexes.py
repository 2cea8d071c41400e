"""What a job contributes to each index, and the ops that move the indexes from one job state to the next."""

from __future__ import annotations

import uuid as _uuid

import msgspec

from registry.domain.model import JobState, Origin, Status
from registry.keys import Keys

# Bit-sliced indexes: value -> bitmaps, one per bit, so range filters become a few BITOPs.
RUNS_BITS = 31
SECOND_US = 1_000_000
SECOND_BITS = 34  # seconds since 1970, up to year 2514
SORT_FIELDS = ("created_at", "updated_at", "start_timestamp", "end_timestamp", "runs", "id")
# Bumped whenever what the projection stores changes shape (index ops, key names, record
# encoding), so copies kept by the benchmark (--keep) are known to be stale.
LAYOUT = 4

# Per-handle value columns, so a small candidate set is filtered and sorted without a sort-set
# lookup per job. Nullable values are stored as value + 1, with 0 for null.
COLUMNS = ("created_at", "updated_at", "start_timestamp", "end_timestamp", "runs")
NULLABLE_COLUMNS = frozenset({"start_timestamp", "end_timestamp"})
# Zone maps: per block of ZONE_SIZE handles, bounds of these fields' values. Handles follow
# arrival, and so do these timestamps, so a block's bounds are tight and a scan in handle
# order can stop as soon as no unread block can beat the page found so far.
ZONE_SIZE = 1024
ZONE_FIELDS = ("created_at", "start_timestamp", "end_timestamp")
# Order fields with a bit-sliced index (seconds, or runs): deep offsets select by counting.
BSI_OF_ORDER = {"created_at": "created", "start_timestamp": "start", "end_timestamp": "end", "runs": "runs"}


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """The indexed view of a listed job (one whose `created` event has been applied)."""

    uuid16: bytes
    status: Status
    origin: Origin
    has_errors: bool
    project: str
    batch: str
    user: str
    runs: int
    created_at: int
    updated_at: int
    start: int | None
    end: int | None


def row_of(state: JobState) -> Row | None:
    c = state.created
    if c is None or not state.listed:
        return None
    assert state.updated_at is not None  # listed implies it; narrows the type
    t = state.terminal
    return Row(
        uuid16=_uuid.UUID(state.job_id).bytes,
        status=state.status,
        origin=c.origin,
        has_errors=bool(t and t.errors),
        project=c.project_id,
        batch=c.batch_id,
        user=c.user_id,
        runs=c.runs,
        created_at=c.occurred_at,
        updated_at=state.updated_at,
        start=state.start_timestamp,
        end=t.occurred_at if t else None,
    )


def sort_score(row: Row, field: str) -> int | None:
    return {
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "start_timestamp": row.start,
        "end_timestamp": row.end,
        "runs": row.runs,
        "id": 0,  # ordered by member, which starts with the uuid bytes
    }[field]


def column_value(row: Row, field: str) -> int:
    value = sort_score(row, field)
    if field in NULLABLE_COLUMNS:
        return 0 if value is None else value + 1
    assert value is not None
    return value


def _bitmaps(keys: Keys, row: Row | None) -> dict[str, int]:
    """Every plain bitmap the job's handle is set in (1) or clear in (0)."""
    if row is None:
        return {}
    return {
        keys.all: 1,
        keys.status[row.status]: 1,
        keys.origin[row.origin]: 1,
        keys.errors: int(row.has_errors),
        keys.started: int(row.start is not None),
        keys.ended: int(row.end is not None),
    }


def _sliced(row: Row | None) -> dict[str, int]:
    """The value each bit-sliced index holds for the job; null sets no bit, like 0."""
    if row is None:
        return {}
    return {
        "runs": row.runs,
        "created": row.created_at // SECOND_US,
        "start": 0 if row.start is None else row.start // SECOND_US,
        "end": 0 if row.end is None else row.end // SECOND_US,
    }


def _flips(old: int, new: int) -> list[int]:
    """The slice bits that differ: bit i becoming 1 is i + 1, becoming 0 is -(i + 1)."""
    out, diff, i = [], old ^ new, 0
    while diff:
        if diff & 1:
            out.append(i + 1 if (new >> i) & 1 else -(i + 1))
        diff >>= 1
        i += 1
    return out


BSI_WIDTH = {"runs": RUNS_BITS, "created": SECOND_BITS, "start": SECOND_BITS, "end": SECOND_BITS}

Op = list[str | int | list[int]]


def index_ops(keys: Keys, old: Row | None, new: Row | None) -> list[Op]:
    """The apply script's ops that move every index from ``old`` to ``new``.

    The script substitutes the job's handle, so ops never name it:
      ["B", bitmap, bit]                   set or clear the handle's bit
      ["S", slice prefix, [flip...]]       bit-sliced index: the bits that change (see _flips)
      ["Z", zset, "score"] / ["z", zset]   add to / remove from a sort set
      ["C", column, "value"]               the handle's slot in a value column
      ["M", set, bitmap, 1|0]              add to / remove from a member index
      ["Q", zone max, "v", "v + 1", block size, zone min]  widen the bounds of the handle's block in a zone map
    Scores and column values travel as strings: Lua numbers would print them rounded.
    """
    ops: list[Op] = []
    before, after = _bitmaps(keys, old), _bitmaps(keys, new)
    for key in sorted(before.keys() | after.keys()):
        b, a = before.get(key, 0), after.get(key, 0)
        if a != b:
            ops.append(["B", key, a])
    sliced_before, sliced_after = _sliced(old), _sliced(new)
    for field in BSI_WIDTH:
        b, a = sliced_before.get(field, 0), sliced_after.get(field, 0)
        if a != b:
            ops.append(["S", keys.slice_prefix(field), _flips(b, a)])
    for field in SORT_FIELDS:
        key = keys.sort(field)
        b_score = sort_score(old, field) if old else None
        a_score = sort_score(new, field) if new else None
        if a_score is not None and (a_score != b_score or old is None):
            ops.append(["Z", key, str(a_score)])
        elif a_score is None and b_score is not None:
            ops.append(["z", key])
    if new is not None:
        for field in COLUMNS:
            value = column_value(new, field)
            if old is None or column_value(old, field) != value:
                ops.append(["C", keys.column(field), str(value)])
    if new is not None:
        for field in ZONE_FIELDS:
            zoned = sort_score(new, field)
            if zoned is not None and (old is None or sort_score(old, field) != zoned):
                ops.append(["Q", keys.zone_max(field), str(zoned), str(zoned + 1), ZONE_SIZE, keys.zone_min(field)])
    for kind in ("project", "batch", "user"):
        b_val = getattr(old, kind) if old else None
        a_val = getattr(new, kind) if new else None
        if b_val == a_val:
            continue
        if b_val is not None:
            ops.append(["M", keys.member_set(kind, b_val), keys.member_bitmap(kind, b_val), 0])
        if a_val is not None:
            ops.append(["M", keys.member_set(kind, a_val), keys.member_bitmap(kind, a_val), 1])
    return ops
