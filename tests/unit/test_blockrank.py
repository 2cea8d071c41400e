"""The block search of deep filtered pages (registry/query/blockrank.py) against sorting every row.

Partitions of a few blocks of handles, each handle a match or not, each match a value (ties, values
correlated with the handle or not, zone bounds exact or widened as writes leave them): the rows the
search reads, ranked from ``below``, must hold exactly the page a full sort gives, at every offset.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.query import blockrank
from registry.store import indexes

Z = blockrank.ZONE_SIZE


def test_block_size_is_the_zone_maps() -> None:
    assert blockrank.ZONE_SIZE == indexes.ZONE_SIZE


def _bitmap(handles: list[int], blocks: int) -> bytes:
    bits = bytearray(blocks * Z // 8)
    for h in handles:
        bits[h // 8] |= 0x80 >> (h % 8)
    return bytes(bits).rstrip(b"\0")  # Redis bitmaps end at their last set byte


def _i64s(values: list[int]) -> bytes:
    return struct.pack(f">{len(values)}q", *values)


@st.composite
def partitions(draw: st.DrawFn) -> list[dict[int, int]]:
    """Per partition, handle -> value of its matches (handles spread over up to 3 blocks)."""
    out = []
    correlated = draw(st.booleans())
    spread = draw(st.sampled_from([3, 50, 10**6]))
    for _ in range(draw(st.integers(1, 4))):
        blocks = draw(st.integers(1, 3))
        hs = draw(st.lists(st.integers(1, blocks * Z - 1), max_size=40, unique=True))
        noise = draw(st.lists(st.integers(0, spread), min_size=len(hs), max_size=len(hs)))
        out.append({h: 1000 + (h * 10 if correlated else 0) + n for h, n in zip(hs, noise, strict=True)})
    return out


def _zone_maps(values: dict[int, int], blocks: int, widen: int) -> tuple[bytes, bytes]:
    highs, lows = [0] * blocks, [0] * blocks
    for b in range(blocks):
        inside = [v for h, v in values.items() if h // Z == b]
        if inside:
            highs[b], lows[b] = max(inside) + widen, min(inside) - widen + 1
    return _i64s(highs), _i64s(lows)


@settings(max_examples=300, deadline=None)
@given(parts=partitions(), desc=st.booleans(), nullable=st.booleans(), widen=st.sampled_from([0, 7]), data=st.data())
def test_block_search_finds_every_page(
    parts: list[dict[int, int]], desc: bool, nullable: bool, widen: int, data: st.DataObject
) -> None:
    shift = 1 if nullable else 0
    blocks: list[blockrank.Block] = []
    columns: dict[int, bytes] = {}
    bitmaps: dict[int, bytes] = {}
    for i, values in enumerate(parts):
        n_blocks = 1 + max(values, default=0) // Z
        bitmaps[i] = _bitmap(list(values), n_blocks)
        column = [0] * (n_blocks * Z)
        for h, v in values.items():
            column[h] = v + shift
        columns[i] = _i64s(column)
        found = blockrank.zone_blocks(i, bitmaps[i], *_zone_maps(values, n_blocks, widen), desc)
        assert found is not None
        blocks += found
    everything = sorted(((-v if desc else v), i, h) for i, values in enumerate(parts) for h, v in values.items())
    if not everything:
        return
    first = data.draw(st.integers(0, len(everything) - 1))
    last = min(first + data.draw(st.integers(0, 12)), len(everything) - 1)
    win = blockrank.window(blocks, first, last)
    rows = sorted(
        (w, b.part, h)
        for b in win.blocks
        for w, h in blockrank.block_rows(
            b, bitmaps[b.part], columns[b.part][b.number * Z * 8 : (b.number + 1) * Z * 8], desc, shift
        )
    )
    values = [w for w, _, _ in rows]
    a, b_, before = blockrank.page_span(values, win.below, first, last)
    lo, hi = blockrank.in_span(values, a, b_)
    # Ties at the page's values are ordered by id (here: by partition and handle) by the caller.
    page = rows[lo:hi][first - before : first - before + last - first + 1]
    assert page == everything[first : last + 1]


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.lists(st.integers(1, 3 * Z - 1), max_size=30, unique=True), min_size=1, max_size=4),
    desc=st.booleans(),
    data=st.data(),
)
def test_creation_order_blocks_find_every_page(parts: list[list[int]], desc: bool, data: st.DataObject) -> None:
    count = len(parts)
    blocks, bitmaps = [], {}
    for i, hs in enumerate(parts):
        bitmaps[i] = _bitmap(hs, 3)
        blocks += blockrank.handle_blocks(i, count, bitmaps[i], desc)
    everything = sorted(((-(h * count + i) if desc else h * count + i), i, h) for i, hs in enumerate(parts) for h in hs)
    if not everything:
        return
    first = data.draw(st.integers(0, len(everything) - 1))
    last = min(first + data.draw(st.integers(0, 12)), len(everything) - 1)
    win = blockrank.window(blocks, first, last)
    rows = sorted((w, b.part, h) for b in win.blocks for w, h in blockrank.handle_rows(b, bitmaps[b.part], count, desc))
    values = [w for w, _, _ in rows]
    a, b_, before = blockrank.page_span(values, win.below, first, last)
    lo, hi = blockrank.in_span(values, a, b_)
    assert rows[lo:hi][first - before : first - before + last - first + 1] == everything[first : last + 1]
