"""The bucketed sort index (registry/store/lua/sortlib.lua) on a real Redis, against a Python sorted list.

Random inserts and removals (ties included: few distinct scores, members ordered by bytes), bucket
and page splits, merges and refills, rank ranges in both directions and counts below any bound; after
each round the whole structure is read back and checked: every node a listpack of at most 128
entries, counts that add up, separators that bound their nodes' entries.
"""

from __future__ import annotations

import bisect
import os
import random

import pytest
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.store import sortidx
from registry.store.sortidx import BUCKET_MAX, Builder, SortIndex, pages_of, sep_key

Entry = tuple[bytes, int]


def order(e: Entry) -> bytes:
    return sep_key(e[1], e[0])


async def structure(r: aioredis.Redis, base: str) -> list[Entry]:
    """Every entry in index order, after checking the structure's invariants."""
    top = await r.zrange(f"{base}:t", 0, -1)
    tn = {k.decode(): int(v) for k, v in (await r.hgetall(f"{base}:tn")).items()}
    out: list[Entry] = []
    seps: list[bytes] = []
    for pe in top:
        pid = int.from_bytes(pe[-4:], "big")
        page = await r.zrange(f"{base}:p:{pid}", 0, -1)
        assert 0 < len(page) <= BUCKET_MAX
        assert (await r.object("encoding", f"{base}:p:{pid}")) == b"listpack"
        pn = {int(k): int(v) for k, v in (await r.hgetall(f"{base}:pn:{pid}")).items()}
        assert set(pn) == {int.from_bytes(e[-4:], "big") for e in page}
        assert sum(pn.values()) == tn[str(pid)]
        assert page[0][:-4] == pe[:-4]  # a page's separator is its first bucket's
        for be in page:
            bid = int.from_bytes(be[-4:], "big")
            rows = await r.zrange(f"{base}:b:{bid}", 0, -1, withscores=True)
            assert len(rows) == pn[bid] <= BUCKET_MAX
            if rows:
                assert (await r.object("encoding", f"{base}:b:{bid}")) == b"listpack"
            seps.append(be[:-4])
            for m, s in rows:
                e = (bytes(m), int(s))
                assert order(e) >= be[:-4]
                out.append(e)
    assert seps == sorted(seps) and (not seps or seps[0] == b"\0")
    assert tn.get("n", 0) == len(out)
    assert [order(e) for e in out] == sorted(order(e) for e in out)
    # every separator after the first is above everything before it
    flat = [order(e) for e in out]
    for sep in seps[1:]:
        assert all(k < sep for k in flat[: bisect.bisect_left(flat, sep)])
    return out


async def check_reads(idx: SortIndex, ref: list[Entry], rng: random.Random) -> None:
    keys = [order(e) for e in ref]
    assert await idx.card() == len(ref)
    n = len(ref)
    for _ in range(12):
        rank, count, desc = rng.randrange(0, n + 3), rng.choice([1, 5, 100, 300]), rng.random() < 0.5
        want = (ref[::-1] if desc else ref)[rank : rank + count]
        assert await idx.range(rank, count, desc) == want
    scores = sorted({s for _, s in ref}) or [0]
    for _ in range(12):
        kind = rng.randrange(4)
        if kind == 0 and ref:
            m, s = rng.choice(ref)
        elif kind == 1:
            m, s = b"", rng.choice(scores) + rng.choice([-1, 0, 1])
        elif kind == 2:
            m, s = b"\xff" * 21, rng.choice(scores) + rng.choice([-1, 0])
        else:
            m, s = rng.randbytes(20), rng.choice(scores)
        assert await idx.below(s, m) == bisect.bisect_left(keys, sep_key(s, m)), (s, m)


def member(rng: random.Random) -> bytes:
    return rng.randbytes(20)


@pytest.fixture
def base(keys: Keys) -> str:
    return keys.sort(f"t{os.urandom(3).hex()}")


async def test_random_inserts_and_removes_match_a_sorted_list(aredis: aioredis.Redis, base: str) -> None:
    rng = random.Random(5)
    idx = SortIndex(aredis, base)
    ref: list[Entry] = []
    for rnd in range(10):
        grow = rnd < 6
        for _ in range(40):
            if grow or not ref or rng.random() < 0.3:
                batch = [(member(rng), rng.choice([rng.randrange(-5, 5), rng.randrange(-(2**53) + 1, 2**53)]))]
                batch += [(member(rng), rng.randrange(0, 40)) for _ in range(rng.randrange(1, 60))]
                assert await idx.add(batch) == len(batch)
                for e in batch:
                    bisect.insort(ref, e, key=order)
            else:
                gone = rng.sample(ref, min(len(ref), rng.randrange(1, 120)))
                assert await idx.remove(gone) == len(gone)
                for e in gone:
                    ref.remove(e)
        assert await structure(aredis, base) == ref
        await check_reads(idx, ref, rng)
    # adding a present member, or removing an absent one, changes nothing
    if ref:
        assert await idx.add([ref[0]]) == 0
    assert await idx.remove([(member(rng), 3)]) == 0
    assert await structure(aredis, base) == ref


async def test_pages_split_and_merge(aredis: aioredis.Redis, base: str) -> None:
    """Enough entries for several pages (arrivals in order, as created_at's), then most removed."""
    rng = random.Random(7)
    idx = SortIndex(aredis, base)
    ref = [(member(rng), 1_700_000_000_000_000 + i * 1000 + rng.randrange(3)) for i in range(24_000)]
    ref.sort(key=order)
    for i in range(0, len(ref), 500):
        assert await idx.add(ref[i : i + 500]) == len(ref[i : i + 500])
    assert len(await aredis.zrange(f"{base}:t", 0, -1)) > 2
    assert await structure(aredis, base) == ref
    await check_reads(idx, ref, rng)
    gone = rng.sample(ref, 23_000)
    for i in range(0, len(gone), 500):
        await idx.remove(gone[i : i + 500])
    left = set(gone)
    ref = [e for e in ref if e not in left]
    assert await structure(aredis, base) == ref
    await check_reads(idx, ref, rng)
    await idx.remove(ref)
    assert await structure(aredis, base) == []
    assert await idx.range(0, 10) == []
    await idx.add(ref[:3])
    assert await structure(aredis, base) == ref[:3]


async def test_bulk_built_index_reads_and_changes_as_one_built_by_inserts(aredis: aioredis.Redis, base: str) -> None:
    rng = random.Random(9)
    ref = sorted(((member(rng), rng.randrange(0, 300)) for _ in range(20_000)), key=order)
    builder = Builder(base)
    for page in pages_of(ref):
        pipe = aredis.pipeline(transaction=True)
        for cmd in builder.page(page):
            pipe.execute_command(*cmd)
        await pipe.execute()
    assert await structure(aredis, base) == ref
    idx = SortIndex(aredis, base)
    await check_reads(idx, ref, rng)
    more = [(member(rng), rng.randrange(-10, 320)) for _ in range(3000)]
    await idx.add(more)
    gone = rng.sample(ref, 5000)
    await idx.remove(gone)
    ref = sorted(set(ref) - set(gone) | set(more), key=order)
    assert await structure(aredis, base) == ref
    await check_reads(idx, ref, rng)


def test_sep_key_orders_as_score_then_member() -> None:
    rng = random.Random(3)
    entries = [
        (rng.randbytes(20), rng.choice([0, 1, -1, 2**53 - 1, -(2**53) + 1, rng.randrange(-50, 50)])) for _ in range(500)
    ]
    assert sorted(entries, key=order) == sorted(entries, key=lambda e: (e[1], e[0]))
    assert min(order(e) for e in entries) > sortidx.MIN_SEP


async def test_one_score_like_the_id_index(aredis: aioredis.Redis, base: str) -> None:
    """Every score 0 (the id index): ties everywhere, bounds by member prefixes as id__starts_with's."""
    rng = random.Random(13)
    idx = SortIndex(aredis, base)
    ref = sorted(((member(rng), 0) for _ in range(3000)), key=order)
    for i in range(0, len(ref), 500):
        await idx.add(ref[i : i + 500])
    gone = rng.sample(ref, 400)
    await idx.remove(gone)
    ref = [e for e in ref if e not in set(gone)]
    assert await structure(aredis, base) == ref
    await check_reads(idx, ref, rng)
    keys = [order(e) for e in ref]
    for prefix in [rng.randbytes(n) for n in (0, 1, 1, 2, 3)] + [ref[5][0][:2], ref[-1][0], ref[0][0] + b"\0"]:
        assert await idx.below(0, prefix) == bisect.bisect_left(keys, sep_key(0, prefix)), prefix


async def test_moves_as_apply_writes_them(aredis: aioredis.Redis, base: str) -> None:
    """APPLY's writes (sx_add_later): arrivals at the tail held back and written as one ZADD, mixed with
    moves of older entries to the tail, removals from the tail bucket in the same call, adds below the
    tail and on the tail separator's score; calls big enough to split the tail bucket (and pages)."""
    rng = random.Random(11)
    idx = SortIndex(aredis, base)
    score: dict[bytes, int] = {}
    now = 1_700_000_000_000
    for rnd in range(60):
        moves: list[tuple[bytes, int | None, int]] = []
        for _ in range(rng.choice([1, 5, 40, 200, 300])):
            now += rng.randrange(0, 3)
            kind = rng.random()
            if kind < 0.5 or not score:
                m, new = member(rng), now  # an arrival
            elif kind < 0.8:
                m, new = rng.choice(list(score)), now  # an older entry moves to the tail
            elif kind < 0.9:
                m, new = rng.choice(list(score)), rng.randrange(1_699_999_999_000, now)  # anywhere
            else:
                m = rng.choice(list(score))
                new = max(score.values())  # on the last score, which may be the tail separator's
            if any(x[0] == m for x in moves):
                continue  # one op per member per call, as APPLY's folded jobs
            moves.append((m, score.get(m), new))
            score[m] = new
        await idx.move(moves)
        if rnd % 10 == 9:
            ref = sorted(score.items(), key=order)
            assert await structure(aredis, base) == ref
            await check_reads(idx, ref, rng)
    # a retried call (everything already applied: nothing to remove, every add a no-op) changes nothing
    await idx.move(moves)
    assert await structure(aredis, base) == sorted(score.items(), key=order)
