"""The fresh-jobs protocol: what FreshRuns encodes column-wise is exactly what the diff path's ops say
(index_ops from no row), bit by bit: words in job order, 63-bit windows, trimmed at the last 1."""

from __future__ import annotations

import random
import struct
import uuid
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.model import Origin, Status
from registry.keys import Keys
from registry.store.fresh import WORD_BITS, FreshRuns, decode_fresh
from registry.store.indexes import ZONE_FIELDS, Row, index_ops
from registry.store.ops import FlipBits, KeyTable, Member, SetBit, SetColumn, WidenZone


def _row(rnd: random.Random, base_s: int, spread_s: int) -> Row:
    created = (base_s + rnd.randrange(spread_s)) * 1_000_000 + rnd.randrange(1_000_000)
    start = created + rnd.randrange(10**8) if rnd.random() < 0.7 else None
    end = (start or created) + rnd.randrange(10**9) if rnd.random() < 0.5 else None
    return Row(
        uuid16=uuid.UUID(int=rnd.getrandbits(128)).bytes,
        status=rnd.choice(list(Status)),
        origin=rnd.choice(list(Origin)),
        has_errors=rnd.random() < 0.2,
        project_id=f"p{rnd.randrange(3)}",
        batch_id=f"b{rnd.randrange(6)}",
        user_id=f"u{rnd.randrange(2)}",
        runs=rnd.choice([1, 2, 50, 100, 2**31 - 1]),
        created_at=created,
        updated_at=max(created, start or 0, end or 0),
        start_timestamp=start,
        end_timestamp=end,
    )


def _expected(keys: Keys, rows: list[Row]) -> tuple[dict[str, set[int]], dict[str, list[int]], dict, dict]:
    """Per key name, what the diff path's ops of each row (as fresh job p) write."""
    table = KeyTable([])
    bits: dict[str, set[int]] = defaultdict(set)
    columns: dict[str, list[int]] = defaultdict(list)
    zones: dict[tuple[str, str], list[str]] = {}
    members: dict[tuple[str, str], list[int]] = defaultdict(list)
    for p, row in enumerate(rows):
        zoned = {}
        for op in index_ops(keys, table, None, row):
            if isinstance(op, SetBit):
                assert op.value == 1
                bits[table.names[op.key - 1]].add(p)
            elif isinstance(op, FlipBits):
                for k in op.flips:
                    assert k > 0
                    bits[table.names[k - 1]].add(p)
            elif isinstance(op, SetColumn):
                columns[table.names[op.key - 1]].append(int(op.value))
            elif isinstance(op, WidenZone):
                assert int(op.value_plus_one) == int(op.value) + 1
                zoned[table.names[op.max_key - 1], table.names[op.min_key - 1]] = op.value
            elif isinstance(op, Member):
                assert op.present == 1
                members[table.names[op.set_key - 1], table.names[op.bitmap_key - 1]].append(p)
        for field in ZONE_FIELDS:
            pair = (keys.zone_max(field), keys.zone_min(field))
            zones.setdefault(pair, []).append(zoned.get(pair, ""))
    return bits, columns, zones, members


def _words(flat: list[int | str]) -> list[tuple[int, int, int, int]]:
    """The header's flat words as (key, start, width, word)."""
    out = []
    for i in range(0, len(flat), 4):
        key, start, kind, word = flat[i : i + 4]
        assert isinstance(key, int) and isinstance(start, int) and isinstance(kind, str) and kind[0] == "u"
        out.append((key, start, int(kind[1:]), int(word)))
    return out


def _check(rows: list[Row]) -> None:
    keys = Keys("t")
    table = KeyTable([keys.seq])
    runs = FreshRuns(keys, table)
    for row in rows:
        runs.add(row)
    header, blob = runs.encode()
    fresh = decode_fresh(header)
    name = table.names.__getitem__
    bits, columns, zones, members = _expected(keys, rows)
    got: dict[str, set[int]] = defaultdict(set)
    for key, start, width, word in _words(fresh.words):
        assert 1 <= width <= WORD_BITS and start % WORD_BITS == 0
        assert word & 1, "a word ends at its last 1"
        for i in range(width):
            if (word >> (width - 1 - i)) & 1:
                got[name(key - 1)].add(start + i)
    assert dict(got) == dict(bits)
    assert fresh.count == len(rows)
    at, got_columns = 0, {}
    for c in fresh.columns:
        assert c.start == 0 and c.length == 8 * len(rows)
        got_columns[name(c.key - 1)] = list(struct.unpack(f">{len(rows)}q", blob[at : at + c.length]))
        at += c.length
    assert at == len(blob) and got_columns == dict(columns)
    assert {(name(z.max_key - 1), name(z.min_key - 1)): z.values for z in fresh.zones} == zones
    assert {(name(m.set_key - 1), name(m.bitmap_key - 1)): m.offsets for m in fresh.members} == dict(members)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3 * WORD_BITS + 2), st.integers(0, 2**32), st.sampled_from([1, 60, 86_400, 10**8]))
def test_fresh_runs_hold_what_the_diff_path_writes(n: int, seed: int, spread_s: int) -> None:
    # Spreads from one second (most slice bits the same in every job) to years (most vary).
    rnd = random.Random(seed)
    _check([_row(rnd, 1_700_000_000, spread_s) for _ in range(n)])


def test_identical_jobs_make_full_words_and_one_run_per_column() -> None:
    rnd = random.Random(1)
    row = _row(rnd, 1_700_000_000, 1)
    rows = [row] * (WORD_BITS + 1)
    _check(rows)
    runs = FreshRuns(Keys("t"), KeyTable([]))
    for r in rows:
        runs.add(r)
    fresh = decode_fresh(runs.encode()[0])
    words = _words(fresh.words)
    assert {(start, width) for _, start, width, _ in words} == {(0, WORD_BITS), (WORD_BITS, 1)}
    assert {word for _, start, _, word in words if start == 0} == {2**WORD_BITS - 1}


def test_no_fresh_jobs_encode_nothing() -> None:
    fresh = decode_fresh(FreshRuns(Keys("t"), KeyTable([])).encode()[0])
    assert (fresh.count, fresh.words, fresh.columns, fresh.zones, fresh.members) == (0, [], [], [], [])
