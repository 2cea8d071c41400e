"""Deep filtered pages across partitions by blocks of handles (issue 14): no probes, no per-value totals.

A filtered listing ordered by created_at, updated_at, start_timestamp, end_timestamp or creation_order
has in every partition a bitmap F of its matches that have an order value (the filter bitmap, built
once, AND the order's not-null bitmap), and for every block of ``ZONE_SIZE`` handles bounds of the
values in it: the zone maps (an upper bound and a lower bound + 1 per block, kept by the apply path;
widened, never narrowed), or for creation_order the block's handles themselves (h * P + i). With
each block's count of F bits, these bounds place the rows at global ranks ``first .. last`` in a
value window [lo, hi]: ``lo`` the largest value that at most ``first`` rows can precede (every block
that may hold a smaller value counted), ``hi`` the smallest that more than ``last`` rows surely
reach. The blocks overlapping the window are read value by value (their column span: 8 KB each);
every other block lies wholly below ``lo`` (``below`` counts its rows) or above ``hi``, so a read
row's global rank is ``below`` plus its place among the read rows, and the page's rows are found
exactly: the read rows between the values at ranks ``first`` and ``last``, ties included, ordered by
(value, id) once their ids are read. Pure: the caller reads the bitmaps, zone maps and columns.

Values here are in the listing's direction (``w = v`` ascending, ``-v`` descending), so "before"
is always "smaller".
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import NamedTuple

from registry.query.bits import i64s

ZONE_SIZE = 1024  # handles per block: registry/store/indexes.py's ZONE_SIZE (checked in the tests)
BLOCK_BYTES = ZONE_SIZE // 8


class Block(NamedTuple):
    """A block of one partition's handles: ``part`` the caller's partition index, ``number`` the block
    number, [low, high] bounds of its values in the listing's direction, ``matches`` its matches."""

    part: int
    number: int
    low: int
    high: int
    matches: int


class Window(NamedTuple):
    """The blocks to read (overlapping [lo, hi]) and the matches in the blocks wholly below ``lo``."""

    blocks: list[Block]
    below: int
    lo: int
    hi: int


def popcounts(bitmap: bytes, blocks: int) -> list[int]:
    """The set bits of each of the first ``blocks`` blocks of a bitmap (short bitmaps are zero-padded)."""
    return [
        int.from_bytes(bitmap[b * BLOCK_BYTES : (b + 1) * BLOCK_BYTES] or b"\0", "big").bit_count()
        for b in range(blocks)
    ]


def zone_blocks(part: int, bitmap: bytes, highs: bytes, lows: bytes, desc: bool) -> list[Block] | None:
    """A partition's blocks holding matches, from its F bitmap and the order's zone maps (raw i64
    arrays of real values: the upper bound, the lower bound + 1, 0 for a block without values). None
    when a block holds matches but no bounds (the maps do not cover it: the caller takes another path)."""
    up, down = i64s(highs), i64s(lows)
    n = (len(bitmap) + BLOCK_BYTES - 1) // BLOCK_BYTES
    out = []
    for b, count in enumerate(popcounts(bitmap, n)):
        if not count:
            continue
        if b >= len(up) or b >= len(down) or down[b] == 0:
            return None
        high, low = up[b], down[b] - 1
        out.append(Block(part, b, -high, -low, count) if desc else Block(part, b, low, high, count))
    return out


def handle_blocks(part: int, partitions: int, bitmap: bytes, desc: bool) -> list[Block]:
    """A partition's blocks for creation_order: block b's handles are b * ZONE_SIZE .. + ZONE_SIZE - 1,
    their orders h * partitions + part."""
    n = (len(bitmap) + BLOCK_BYTES - 1) // BLOCK_BYTES
    out = []
    for b, count in enumerate(popcounts(bitmap, n)):
        if count:
            low, high = (b * ZONE_SIZE) * partitions + part, ((b + 1) * ZONE_SIZE - 1) * partitions + part
            out.append(Block(part, b, -high, -low, count) if desc else Block(part, b, low, high, count))
    return out


def window(blocks: Sequence[Block], first: int, last: int) -> Window:
    """The blocks that hold every row of global ranks ``first`` .. ``last`` (0 <= first <= last < the
    blocks' matches in all), and the matches wholly below them."""
    assert 0 <= first <= last < sum(b.matches for b in blocks), (first, last)
    # lo: the largest value that at most ``first`` rows can precede (blocks whose low is below it).
    by_low = sorted(blocks, key=lambda b: b.low)
    seen = 0
    lo = by_low[-1].low
    for b in by_low:
        seen += b.matches
        if seen > first:
            lo = b.low
            break
    # hi: the smallest value that more than ``last`` rows surely reach (blocks whose high is at most it).
    by_high = sorted(blocks, key=lambda b: b.high)
    seen = 0
    hi = by_high[-1].high
    for b in by_high:
        seen += b.matches
        if seen > last:
            hi = b.high
            break
    chosen = [b for b in blocks if b.high >= lo and b.low <= hi]
    below = sum(b.matches for b in blocks if b.high < lo)
    return Window(chosen, below, lo, hi)


# The set bits of each byte value, as offsets from the byte's first bit (the highest): a block's
# matches are found a byte at a time, not a bit at a time (~700 matches a block at 1M jobs).
_OFFSETS = tuple(tuple(k for k in range(8) if byte & (0x80 >> k)) for byte in range(256))


def _handles(bitmap: bytes, number: int) -> list[int]:
    """The offsets in block ``number`` (0 .. ZONE_SIZE - 1) of its set bits, in order."""
    out: list[int] = []
    data = bitmap[number * BLOCK_BYTES : (number + 1) * BLOCK_BYTES]
    for at, byte in enumerate(data):
        if byte:
            base = at * 8
            out += [base + k for k in _OFFSETS[byte]]
    return out


def block_rows(block: Block, bitmap: bytes, column: bytes, desc: bool, shift: int) -> list[tuple[int, int]]:
    """(value in the listing's direction, handle) of the block's matches: its F bits, their values read
    from the block's span of the order's column (``shift``: what the column adds to a value)."""
    values = i64s(column)
    first, sign, n = block.number * ZONE_SIZE, -1 if desc else 1, len(values)
    return [(sign * ((values[k] if k < n else 0) - shift), first + k) for k in _handles(bitmap, block.number)]


def handle_rows(block: Block, bitmap: bytes, partitions: int, desc: bool) -> list[tuple[int, int]]:
    """(creation_order in the listing's direction, handle) of a creation_order block's matches."""
    first, sign = block.number * ZONE_SIZE, -1 if desc else 1
    return [(sign * ((first + k) * partitions + block.part), first + k) for k in _handles(bitmap, block.number)]


def page_span(values: Sequence[int], below: int, first: int, last: int) -> tuple[int, int, int]:
    """Over the read rows' values (sorted), the values of the rows at global ranks ``first`` and ``last``,
    and how many rows come before the first of them (all partitions)."""
    a, b = values[first - below], values[min(last - below, len(values) - 1)]
    return a, b, below + bisect_left(values, a)


def in_span(values: Sequence[int], a: int, b: int) -> tuple[int, int]:
    """The index range of the sorted ``values`` within [a, b]."""
    return bisect_left(values, a), bisect_right(values, b)
