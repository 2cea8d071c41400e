"""The fresh-jobs protocol: bitmap words (bit order, 63-bit segments, trimmed at the last 1) and column runs."""

from __future__ import annotations

import struct

from registry.store.fresh import WORD_BITS, FreshRuns, decode_fresh
from registry.store.ops import FlipBits, SetBit, SetColumn, SortAdd


def _bits(words: list[tuple[int, int, int, str]], key: int) -> dict[int, int]:
    """Fresh job -> bit, as BITFIELD SET u<width> writes them (the word's top bit first)."""
    out: dict[int, int] = {}
    for k, start, width, word in words:
        if k == key:
            for i in range(width):
                out[start + i] = (int(word) >> (width - 1 - i)) & 1
    return out


def test_bits_and_columns_travel_as_runs_in_job_order() -> None:
    runs = FreshRuns()
    n = 2 * WORD_BITS + 5
    rest = []
    for p in range(n):
        ops = [FlipBits([6, 7] if p % 3 else [7]), SetColumn(8, str(p - 50)), SortAdd(9, "1", "")]
        if p % 2 == 0:
            ops.append(SetBit(5, 1))
        rest += runs.take(ops)
    assert rest == [SortAdd(9, "1", "")] * n  # only what cannot travel column-wise stays per job
    header, blob = runs.encode()
    fresh = decode_fresh(header)
    assert fresh.count == n
    words = [(w.key, w.start, w.width, w.word) for w in fresh.words]
    assert all(1 <= w[2] <= WORD_BITS for w in words)
    evens = _bits(words, 5)
    assert {p for p, b in evens.items() if b} == set(range(0, n, 2))
    assert all(b == 0 for p, b in evens.items() if p % 2)
    assert max(evens) == n - 1 - (n - 1) % 2  # the last word ends at the last 1
    assert {p for p, b in _bits(words, 6).items() if b} == {p for p in range(n) if p % 3}
    assert {p for p, b in _bits(words, 7).items() if b} == set(range(n))
    [column] = fresh.columns
    assert (column.key, column.start, column.length) == (8, 0, 8 * n)
    assert list(struct.unpack(f">{n}q", blob)) == [p - 50 for p in range(n)]


def test_a_column_with_gaps_is_written_as_several_runs() -> None:
    runs = FreshRuns()
    for p in range(5):
        runs.take([SetColumn(3, str(p))] if p != 2 else [])
    fresh = decode_fresh(runs.encode()[0])
    assert [(c.start, c.length) for c in fresh.columns] == [(0, 16), (3, 16)]


def test_clears_stay_per_job() -> None:
    # A fresh handle holds no bits, so clears never come from a fresh job; if one did, it must
    # not be folded into a word (which can only set).
    runs = FreshRuns()
    assert runs.take([SetBit(4, 0), FlipBits([5, -6])]) == [SetBit(4, 0), FlipBits([5, -6])]
    assert decode_fresh(runs.encode()[0]).words == []
