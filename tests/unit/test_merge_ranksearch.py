"""Property tests of the partition merge and the rank search (issue 14), on in-memory partitions."""

from __future__ import annotations

import asyncio
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.domain.model import Job, Origin, Status
from registry.query.merge import Value, creation_order, merge, row_value, sort_key, value_key
from registry.query.ranksearch import rank_search
from registry.query.spec import OrderBy

ORDERS = (OrderBy.RUNS, OrderBy.START_TIMESTAMP, OrderBy.CREATION_ORDER, OrderBy.ID)


def job(job_id: str, runs: int, start: int | None, order: int) -> Job:
    stamp = None if start is None else f"2026-01-01T00:00:{start:02d}.000000+00:00"
    return Job(
        id=job_id,
        parent_id=None,
        batch_id=job_id,
        project_id=job_id,
        user_id="u",
        status=Status.DONE,
        runs=runs,
        origin=Origin.CLIENT,
        errors=[],
        variables=None,
        creation_order=order,
        created_at="2026-01-01T00:00:00.000000+00:00",
        updated_at="2026-01-01T00:00:00.000000+00:00",
        start_timestamp=stamp,
        end_timestamp=None,
    )


# Few distinct values: ties and nulls in most draws.
rows = st.lists(
    st.tuples(st.uuids(), st.integers(1, 4), st.none() | st.integers(0, 3)), unique_by=lambda r: r[0], max_size=40
)


def partitioned(draw: list[tuple[uuid.UUID, int, int | None]], parts: int) -> list[list[Job]]:
    out: list[list[Job]] = [[] for _ in range(parts)]
    for u, runs, start in draw:
        i = u.int % parts
        out[i].append(job(str(u), runs, start, creation_order(len(out[i]), parts, i)))
    return out


@settings(max_examples=200, deadline=None)
@given(rows, st.integers(1, 5), st.sampled_from(ORDERS), st.booleans(), st.integers(0, 45), st.integers(1, 10))
def test_merge_is_the_sorted_union(
    draw: list[tuple[uuid.UUID, int, int | None]], parts: int, order: OrderBy, desc: bool, skip: int, limit: int
) -> None:
    pages = [sorted(p, key=lambda j: sort_key(j, order, desc)) for p in partitioned(draw, parts)]
    everything = sorted((j for p in pages for j in p), key=lambda j: sort_key(j, order, desc))
    assert merge(pages, order, desc, skip, limit) == everything[skip : skip + limit]
    # The key orders as the contract says: by value (nulls last), then id, both in the direction.
    keys = [sort_key(j, order, desc) for j in everything]
    assert len(set(keys)) == len(keys)


def values_of(jobs: list[Job], order: OrderBy) -> list[Value]:

    return [row_value(j, order) for j in jobs]


@settings(max_examples=300, deadline=None)
@given(rows, st.integers(1, 6), st.sampled_from(ORDERS), st.booleans(), st.integers(1, 6), st.integers(0, 8), st.data())
def test_rank_search_finds_the_value_at_any_offset(
    draw: list[tuple[uuid.UUID, int, int | None]],
    parts: int,
    order: OrderBy,
    desc: bool,
    pivots: int,
    window: int,
    data: st.DataObject,
) -> None:
    pages = [sorted(p, key=lambda j: sort_key(j, order, desc)) for p in partitioned(draw, parts)]
    everything = sorted((j for p in pages for j in p), key=lambda j: sort_key(j, order, desc))
    if not everything:
        return
    offset = data.draw(st.integers(0, len(everything) - 1))
    columns = [values_of(p, order) for p in pages]  # empty partitions included

    async def probe(ranks: list[tuple[int, int]]) -> list[Value]:
        return [columns[j][rank] for j, rank in ranks]

    def count_one(value: Value) -> list[tuple[int, int]]:
        v = value_key(value, desc)
        return [(sum(value_key(x, desc) < v for x in c), sum(value_key(x, desc) <= v for x in c)) for c in columns]

    async def count(values: list[Value]) -> list[list[tuple[int, int]]]:
        return [count_one(v) for v in values]

    sizes = [len(c) for c in columns]
    found = asyncio.run(rank_search(offset, sizes, probe, count, lambda v: value_key(v, desc), pivots, window))
    target = everything[offset]
    if found.widths is not None:
        # Stopped at a small window: the target is row ``skip`` of the windows' merge.
        assert sum(found.widths) <= window
        merged = sorted(
            (j for p, lo, w in zip(pages, found.before, found.widths, strict=True) for j in p[lo : lo + w]),
            key=lambda j: sort_key(j, order, desc),
        )
        assert merged[found.skip] == target
        return
    assert found.value == row_value(target, order)
    # Rows before the value, plus the skip into its tie group, is the offset.
    assert sum(found.before) + found.skip == offset
    assert found.before == [sum(value_key(x, desc) < value_key(found.value, desc) for x in c) for c in columns]
