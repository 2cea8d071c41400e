"""Rank search (issue 14): the order value of the row at a global offset, from per-partition rank counts.

A deep offset across P partitions is not answered by fetching offset + limit rows from each (what
peers do, and why they cap offsets). The row at global rank ``o`` has some order value v*; every
partition can count its matches ordered strictly before a value (``before``) and up to it included
(``through``), and read its row at a rank (``probe``). With B(v) and T(v) the sums over partitions,
v* is the value with B(v*) <= o < T(v*). The search keeps, per partition, the window of ranks
[lo, hi) whose values are still undecided, probes each window at the fraction the target sits at
(partitions are hash-partitioned, so the probes land close to v*), counts the median probe value in
every partition and moves the windows' bounds to it. Each round removes at least the rows at the
pivot value, so it ends; on random partitions it takes a few rounds whatever ``o`` is. The caller
then reads each partition's first ``skip + limit`` rows from v* on and merges them (``skip`` rows of
the tie group at v* lie before the target). Where partitions count ranks of whole rows (value, id)
(a sort index without filters), the same search runs over rows instead of values: no two rows tie,
so ``skip`` is 0 and each partition reads ``limit`` rows at its count. Pure: the I/O is injected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

# Past this many rounds the store changed under the search (writes between its reads): the last
# pivot answers (exact on a store at rest, which always ends sooner).
MAX_ROUNDS = 64

T = TypeVar("T")  # what is searched: an order value, or a row's (value, id)


@dataclass(frozen=True)
class Found(Generic[T]):
    """Where the row at the offset is: its order value, each partition's matches ordered before that
    value, and how many of the value's rows (all partitions merged) come before the target. Stopped
    at a small window (``widths``: each partition's rows in it), ``value`` is only the last pivot,
    ``before`` the windows' starts and ``skip`` the target's place in the windows' merge."""

    value: T
    before: list[int]
    skip: int
    rounds: int
    widths: list[int] | None = None


def _probe_ranks(offset: int, lo: Sequence[int], hi: Sequence[int]) -> list[tuple[int, int]]:
    """(partition, rank) to probe: each open window at the fraction of the whole the target sits at."""
    low = sum(lo)
    width = sum(hi) - low
    out = []
    for j, (a, b) in enumerate(zip(lo, hi, strict=True)):
        if b > a:
            out.append((j, a + min(b - a - 1, (offset - low) * (b - a) // width)))
    return out


async def rank_search(
    offset: int,
    sizes: Sequence[int],
    probe: Callable[[list[tuple[int, int]]], Awaitable[Sequence[T]]],
    count: Callable[[list[T]], Awaitable[Sequence[Sequence[tuple[int, int]]]]],
    key: Callable[[T], Any],
    pivots: int = 1,
    window: int = 0,
) -> Found[T]:
    """The value of the row at global rank ``offset`` (0 <= offset < sum(sizes)) of partitions of
    ``sizes`` rows each, ordered by ``key``: ``probe([(j, r), ...])`` the values of partition j's
    rows at rank r, ``count(vs)`` for each value each partition's rows (ordered before it, up to it included).
    ``pivots``: how many of a round's probes are counted (around their median), when counting is
    cheap next to a round trip: the closest below and above the target bound the next round.
    ``window``: stop once the open windows hold at most that many rows in all; ``before`` is then
    each window's start and ``skip`` the target's place in their merge (the caller reads them)."""
    assert 0 <= offset < sum(sizes), (offset, sizes)
    lo, hi = [0] * len(sizes), list(sizes)
    last: list[T] = []  # the last pivot counted (a list: a value may be None, a null)
    before: list[int] = []
    for rounds in range(1, MAX_ROUNDS + 1):
        ranks = _probe_ranks(offset, lo, hi)
        if not ranks and rounds > 1:
            break  # the store changed under the search
        values = sorted(await probe(ranks), key=key)
        middle = len(values) // 2
        chosen = values[max(0, middle - pivots // 2) : middle + (pivots + 1) // 2]
        for pivot, counts in zip(chosen, await count(chosen), strict=True):
            last, before = [pivot], [b for b, _ in counts]
            b_sum, t_sum = sum(before), sum(t for _, t in counts)
            if b_sum <= offset < t_sum:
                return Found(pivot, before, offset - b_sum, rounds)
            if t_sum <= offset:
                lo = [max(a, t) for a, (_, t) in zip(lo, counts, strict=True)]
            else:
                hi = [min(b, x) for b, x in zip(hi, before, strict=True)]
        if sum(hi) - sum(lo) <= window:
            return Found(last[0], lo, offset - sum(lo), rounds, [b - a for a, b in zip(lo, hi, strict=True)])
    return Found(last[0], before, max(0, offset - sum(before)), MAX_ROUNDS)
