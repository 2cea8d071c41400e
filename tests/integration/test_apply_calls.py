"""Apply calls against a real Redis: fresh jobs' bits and columns written as runs hold exactly what
per-op writes would, calls are cut by cost, and a moved version makes a call write nothing."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

import pytest
import redis
import redis.asyncio as aioredis

from registry.domain.fold import fold
from registry.domain.model import Event
from registry.keys import Keys
from registry.settings import Settings
from registry.store import indexes, record
from registry.store.indexes import Row, column_value, index_ops, row_of
from registry.store.ops import FlipBits, KeyTable, SetBit, SetColumn
from registry.store.projection import MAX_BUDGET, MIN_BUDGET, US_PER_COST, ApplyResult, Projection, _Call, _Write
from registry.wire.events import decode_event
from tests.harness import snapshot
from tests.reference import make_traffic


def _events(n_jobs: int, seed: int) -> list[Event]:
    return [decode_event(raw) for raw in make_traffic(random.Random(seed), n_jobs, bad_rate=0.0)]


def _expected_bitmaps(keys: Keys, rows: dict[int, Row | None]) -> dict[str, bytes]:
    """Every plain and bit-sliced bitmap as per-op SETBITs of each job's ops would leave it."""
    bits: dict[str, set[int]] = defaultdict(set)
    table = KeyTable([])
    for h, row in rows.items():
        for op in index_ops(keys, table, None, row):
            if isinstance(op, SetBit) and op.value:
                bits[table.names[op.key - 1]].add(h)
            elif isinstance(op, FlipBits):
                bits.update({table.names[k - 1]: bits[table.names[k - 1]] | {h} for k in op.flips})
    out = {}
    for name, handles in bits.items():
        raw = bytearray(max(handles) // 8 + 1)
        for h in handles:
            raw[h // 8] |= 0x80 >> (h % 8)
        out[name] = bytes(raw)
    return out


async def test_fresh_jobs_written_as_runs_match_per_op_writes(aredis: aioredis.Redis, keys: Keys) -> None:
    events = _events(300, seed=11)
    # One call for everything: well over one 63-bit word of fresh jobs per bitmap.
    projection = Projection(aredis, keys, chunk=1000, call_budget=10**9)
    result = await projection.apply(events)
    assert result.calls == 1
    by_job: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_job[e.job_id].append(e)
    handles = await record.handles(aredis, keys, list(by_job))
    rows = {h: row_of(fold(job, by_job[job], None)) for job, h in zip(by_job, handles, strict=True) if h is not None}
    assert len(rows) > 2 * 63 and sorted(rows) == list(range(1, len(rows) + 1))
    for name, expected in _expected_bitmaps(keys, rows).items():
        assert await aredis.get(name) == expected, name
    table = KeyTable([])
    for h, row in rows.items():
        for op in index_ops(keys, table, None, row):
            if isinstance(op, SetColumn):
                name = table.names[op.key - 1]
                field = name.rsplit(":", 1)[-1]
                [got] = await aredis.bitfield(name).get("i64", f"#{h}").execute()
                assert got == int(op.value) == column_value(row, field)  # type: ignore[arg-type]


async def test_calls_are_cut_by_cost(aredis: aioredis.Redis, keys: Keys) -> None:
    events = _events(200, seed=12)
    cheap = Projection(aredis, keys, call_budget=400)
    result = await cheap.apply(events)
    # ~200 fresh jobs, a few hundred index keys per call: several calls, none of them one job only.
    assert 3 <= result.calls < result.changed / 2


async def test_a_moved_version_makes_the_call_write_nothing(aredis: aioredis.Redis, keys: Keys) -> None:
    events = _events(20, seed=13)
    projection = Projection(aredis, keys, chunk=1000, call_budget=10**9)
    by_job: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_job[e.job_id].append(e)
    jobs = list(by_job)
    stale = jobs[5]
    await aredis.hset(keys.job(stale), "v", "7")  # another worker wrote it since we read it
    writes = [_Write(job, "", None, fold(job, by_job[job], None)) for job in jobs]
    replies = await projection._run(writes, ApplyResult())
    assert replies == [-1 if job == stale else -2 for job in jobs]
    assert await aredis.get(keys.seq) is None and await aredis.xlen(keys.changes) == 0
    assert [await aredis.exists(keys.job(job)) for job in jobs] == [int(job == stale) for job in jobs]


async def test_calls_are_sized_to_the_time_budget_from_their_measured_durations(
    aredis: aioredis.Redis, keys: Keys
) -> None:
    events = _events(300, seed=14)
    half = len(events) // 2
    # Each call reports how long it ran, and the estimate follows; no real call fits 1 us, so
    # calls stay at the floor: several small ones where one would carry everything.
    tight = Projection(aredis, keys, chunk=1000, call_us=1)
    first = await tight.apply(events[:half])
    assert len(tight.durations) == first.calls and all(d >= 0 for d in tight.durations)
    assert tight.us_per_cost != US_PER_COST and tight.call_budget == MIN_BUDGET
    second = await tight.apply(events[half:])
    assert second.calls >= 3 and len(tight.durations) == first.calls + second.calls
    # Handles stay consecutive in application order, however the calls were cut.
    handles = [h for h in await record.handles(aredis, keys, list(dict.fromkeys(e.job_id for e in events))) if h]
    assert sorted(handles) == list(range(1, len(handles) + 1))


async def test_a_generous_time_budget_makes_one_call(aredis: aioredis.Redis, keys: Keys) -> None:
    events = _events(150, seed=15)
    roomy = Projection(aredis, keys, chunk=1000, call_us=10**7)
    assert (await roomy.apply(events)).calls == 1
    assert roomy.call_budget == MAX_BUDGET


async def test_calls_survive_a_flushed_script_cache(aredis: aioredis.Redis, keys: Keys) -> None:
    events = _events(60, seed=16)
    projection = Projection(aredis, keys, chunk=10)
    first = await projection.apply(events[:30])
    await aredis.script_flush()  # a restart or a failover: the packed calls' SHA is unknown now
    second = await projection.apply(events[30:])
    assert first.changed and second.changed and second.calls >= 2
    assert (await projection.apply(events)).changed == 0  # everything applied, exactly once


@pytest.mark.parametrize("zone_size", [indexes.ZONE_SIZE, 8])
async def test_the_column_wise_writer_writes_what_the_diff_path_writes(
    aredis: aioredis.Redis, keys: Keys, settings: Settings, monkeypatch: pytest.MonkeyPatch, zone_size: int
) -> None:
    # Shuffled traffic in several applies: jobs listed in one call and updated in later ones, events
    # before their job's `created`, member sets outgrowing the threshold mid-call, and calls of a few
    # jobs (fresh runs crossing zone blocks and 63-bit windows at any handle). The reference is the
    # same calls with every job's whole diff sent as per-job ops.
    events = _events(2600, seed=17)
    cuts = [0, 40, 700, 1500, len(events)]
    prefix = keys.prefix
    monkeypatch.setattr(indexes, "ZONE_SIZE", zone_size)  # small: fresh runs cross blocks in most calls

    async def load(columnwise: bool, name: str) -> None:
        monkeypatch.setattr(_Call, "columnwise", columnwise)
        projection = Projection(aredis, Keys(name), set_to_bitmap_threshold=300, call_budget=900)
        for a, b in itertools.pairwise(cuts):
            await projection.apply(events[a:b])

    await load(True, f"{prefix}c")
    await load(False, f"{prefix}d")
    r = redis.Redis.from_url(settings.redis_url)
    try:
        want, got = snapshot(r, f"{prefix}d"), snapshot(r, f"{prefix}c")
    finally:
        r.close()
    assert len(want) > 150 and sorted(got) == sorted(want)
    differing = [key for key in want if got[key] != want[key]]
    assert not differing, f"{len(differing)} keys differ, e.g. {differing[:5]}"
