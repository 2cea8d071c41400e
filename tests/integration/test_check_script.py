"""lua/check.lua reads keys a window at a time: its values and bits agree with BITFIELD/GETBIT everywhere."""

from __future__ import annotations

import random

import redis.asyncio as aioredis

from registry import lua
from registry.keys import Keys
from registry.query.check import compile_check
from registry.query.planner import AnyBit, NoBit, Range
from registry.query.scripts import Scripts


async def test_windowed_reads_match_single_reads(aredis: aioredis.Redis, keys: Keys) -> None:
    rng = random.Random(11)
    col, bits, other = keys.column("runs"), keys.status["DONE"], keys.errors
    # Values across the i64 range a Lua number holds exactly (negatives included), written
    # sparsely so that windows, ends of keys and never-written handles all occur.
    written = {
        h: rng.choice([0, 1, -1, 255, -256, 2**40 + 7, -(2**40) - 3, 2**53 - 1, -(2**53) + 1, rng.randrange(1 << 50)])
        for h in rng.sample(range(5000), 400)
    }
    pipe = aredis.pipeline(transaction=False)
    for h, v in written.items():
        pipe.bitfield(col).set("i64", f"#{h}", v).execute()
        if rng.random() < 0.5:
            pipe.setbit(bits, h, 1)
        if rng.random() < 0.3:
            pipe.setbit(other, h, 1)
    await pipe.execute()
    scripts = Scripts(aredis)
    await scripts.load()
    handles = sorted(rng.sample(range(6000), 1500))  # some past every key's end
    lo, hi = -(2**41), 2**45
    program = compile_check(keys.uuids, col, [AnyBit((bits,)), NoBit(other), Range("runs", "", col, False, lo, hi)])
    rows = await scripts.check_chunks(program, handles, 97, False)
    want = []
    for h in handles:
        v = written.get(h, 0)
        if await aredis.getbit(bits, h) and not await aredis.getbit(other, h) and lo <= v <= hi:
            want.append((h, v))
    assert [(r.handle, r.value) for r in rows] == want
    assert len(want) > 10  # the data exercises the matching path, not only rejections
    everything = await scripts.check_chunks(compile_check(keys.uuids, col, []), handles, 1000, False)
    assert [(r.handle, r.value) for r in everything] == [(h, written.get(h, 0)) for h in handles]


async def test_scattered_candidates_prefetched_match_single_reads(aredis: aioredis.Redis, keys: Keys) -> None:
    """Candidates over 64 handles apart are read with batched BITFIELD_RO (checklib prefetch), op by
    op: the rows agree with single reads, nulls, key ends, negatives and a set test included."""
    rng = random.Random(12)
    col, bits, other, ends = keys.column("runs"), keys.status["DONE"], keys.errors, keys.column("end_timestamp")
    handles = sorted(rng.sample(range(300_000), 1200))  # ~250 apart: the scattered path
    values = [0, 1, -1, 255, -256, 2**40 + 7, -(2**40) - 3, 2**53 - 1, -(2**53) + 1]
    written = {h: rng.choice([*values, rng.randrange(1 << 50)]) for h in rng.sample(handles[:1000], 700)}
    nullable = {h: rng.choice([0, 0, 5, 2**45]) for h in rng.sample(handles[:1000], 600)}  # stored value + 1
    pipe = aredis.pipeline(transaction=False)
    for h, v in written.items():
        pipe.bitfield(col).set("i64", f"#{h}", v).execute()
    for h, v in nullable.items():
        pipe.bitfield(ends).set("i64", f"#{h}", v).execute()
    for h in handles:
        if rng.random() < 0.6:
            pipe.setbit(bits, h, 1)
        if rng.random() < 0.2:
            pipe.setbit(other, h, 1)
    await pipe.execute()
    scripts = Scripts(aredis)
    await scripts.load()
    lo, hi = -(2**41), 2**45
    preds = [
        AnyBit((bits,)),
        NoBit(other),
        Range("runs", "", col, False, lo, hi),
        Range("end_timestamp", "", ends, True, 0, 10),
    ]
    want = []
    for h in handles:
        v, e = written.get(h, 0), nullable.get(h, 0)
        if await aredis.getbit(bits, h) and not await aredis.getbit(other, h) and lo <= v <= hi and 1 <= e <= 11:
            want.append((h, v))
    assert len(want) > 10
    for chunk in (97, 1200):
        rows = await scripts.check_chunks(compile_check(keys.uuids, col, preds), handles, chunk, False)
        assert [(r.handle, r.value) for r in rows] == want
    everything = await scripts.check_chunks(compile_check(keys.uuids, col, []), handles, 1200, False)
    assert [(r.handle, r.value) for r in everything] == [(h, written.get(h, 0)) for h in handles]


async def test_kth_smallest_selects_like_a_sort(aredis: aioredis.Redis) -> None:
    """checklib's quickselect (CHECK's top mode, PICK and PAGE's page window) against Python's sort:
    ties, sorted and reversed runs, negatives, every k."""
    body = (
        "local a = {}\nfor i = 1, #ARGV - 1 do a[i] = tonumber(ARGV[i]) end\n"
        "local k = tonumber(ARGV[#ARGV])\nlocal v = kth_smallest(a, 1, #a, k)\n"
        "for i = 1, #a do if (i < k and a[i] > v) or (i > k and a[i] < v) then return -1 end end\nreturn v\n"
    )
    text = "#!lua\n" + lua.source("registry.query", "lib") + lua.source("registry.query", "checklib") + body
    rng = random.Random(5)
    for n in (1, 2, 3, 7, 50, 400):
        for shape in ("random", "ties", "sorted", "reversed"):
            values = [rng.randint(-(2**40), 2**40) for _ in range(n)]
            if shape == "ties":
                values = [rng.choice((-3, 0, 5)) for _ in range(n)]
            elif shape == "sorted":
                values.sort()
            elif shape == "reversed":
                values.sort(reverse=True)
            for k in sorted({1, n, (n + 1) // 2, rng.randint(1, n)}):
                assert await aredis.eval(text, 0, *values, k) == sorted(values)[k - 1], (shape, n, k)
