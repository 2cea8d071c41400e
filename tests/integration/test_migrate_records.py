"""`jobreg migrate` from layout 5 (tests/fixtures/layout5.rdb, written by the layout-5 code) to 6: the compact records.

The fixture holds the events it was built from and its change log (states in the layout-5 codec),
so the reference here is folded from the same stream, and old change-log entries are read back.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from registry.domain.fold import fold, to_job
from registry.domain.model import Event, EventType, JobState
from registry.keys import Keys
from registry.live.changes import UUID, decode_entries
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import load_settings
from registry.store import layout, record
from registry.store.indexes import LAYOUT
from registry.store.projection import Projection
from tests.conftest import RedisServer, layout_fixture_store
from tests.harness import ROOT, decode_all, jobreg, stream_entries, text_fields
from tests.integration.test_migrate import CountingProxy, clean_env, sha
from tests.query_params import parse_params
from tests.reference import Reference, random_query

PREFIX = "v5"  # the fixture's (tests/fixtures/make_layout5.py)
BATCH = 37


@pytest.fixture
def v5_store() -> Iterator[RedisServer]:
    """A private redis-server loaded with the layout-5 fixture."""
    with layout_fixture_store(5) as server:
        yield server


@pytest.fixture
async def client(v5_store: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(v5_store.url)
    yield c
    await c.aclose()


def folded(url: str, keys: Keys) -> dict[str, JobState]:
    """Every job's state folded from the fixture's own events: what each record must decode to."""
    sync = redis.Redis.from_url(url)
    texts = [t for _, f in stream_entries(sync, keys.events) if (t := text_fields(f)) is not None]
    sync.close()
    by_job: dict[str, list[Event]] = defaultdict(list)
    for event in decode_all(texts):
        by_job[event.job_id].append(event)
    return {job_id: fold(job_id, events) for job_id, events in by_job.items()}


async def stored(client: aioredis.Redis, keys: Keys, job_ids: list[str]) -> dict[str, tuple[bytes, bytes, bytes]]:
    """(version, handle, state blob) of each job's record."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), ["v", "h", "s"])
    return {j: (v, h or b"", s) for j, (v, h, s) in zip(job_ids, await pipe.execute(), strict=True)}


async def test_migrate_5_to_6_killed_midway_resumes_and_everything_reads_back(
    v5_store: RedisServer, client: aioredis.Redis
) -> None:
    keys = Keys(PREFIX)
    assert (await layout.read(client, keys)).version == 5 and LAYOUT >= 6
    states = folded(v5_store.url, keys)
    ids = sorted(states)
    before = await stored(client, keys, ids)
    listed = {j for j, (_, h, _) in before.items() if h}
    unlisted = {j for j, (v, h, _) in before.items() if v and not h}
    assert len(listed) > 4 * BATCH and unlisted, "the fixture holds listed jobs and records of unlisted ones"
    assert not any(record.is_compact(s) for _, _, s in before.values() if s)
    # The older codec still reads, before any migration.
    for job_id, (_, _, blob) in before.items():
        if blob:
            assert record.decode_state(blob, job_id) == states[job_id]

    # First run: relayed until its fourth write call, which never reaches Redis; then killed.
    proxy = CountingProxy(v5_store.port, sha("migrate_records"), hold_after=4)
    command = [sys.executable, "-m", "registry.ops.cli", "migrate", "--batch", str(BATCH)]
    env = clean_env(f"redis://127.0.0.1:{proxy.port}/0", JOBREG_PREFIX=PREFIX)
    first = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.held.wait(60), "the migration never reached its fourth call"
    finally:
        first.kill()
        first.wait()
        proxy.close()
    state = await layout.read(client, keys)
    assert (state.version, state.migrating_to) == (5, 6)
    # The first EVALSHA of a fresh server answers NOSCRIPT (redis-py then loads the script): three ran.
    assert state.next_handle == 1 + 3 * BATCH
    midway = await stored(client, keys, ids)
    assert {j for j in listed if record.is_compact(midway[j][2])} == {
        j for j in listed if int(midway[j][1]) < state.next_handle
    }

    second = jobreg("migrate", "--batch", str(BATCH), env=clean_env(v5_store.url, JOBREG_PREFIX=PREFIX))
    assert second.returncode == 0, second.stderr
    assert "layout 5 -> 6: job records re-encoded in the compact state codec" in second.stderr
    assert f"jobreg migrate: the store now holds layout {LAYOUT} (from 5," in second.stdout
    assert await client.get(keys.layout) == str(LAYOUT).encode() and not await client.exists(keys.migration)

    after = await stored(client, keys, ids)
    for job_id in ids:
        v, h, blob = after[job_id]
        # Same versions and handles (a worker's compare-and-set is undisturbed), the same state.
        assert (v, h) == before[job_id][:2]
        assert record.is_compact(blob) == (job_id in listed), job_id  # unlisted: rewritten at their next write
        if blob:
            assert record.decode_state(blob, job_id) == states[job_id]
    assert sum(len(after[j][2]) for j in listed) < 0.6 * sum(len(before[j][2]) for j in listed)

    # Queries render the migrated records: the pages match the reference, job by job.
    ex = Executor(client, keys, load_settings({}, redis_url=v5_store.url, prefix=PREFIX))
    ref = Reference()
    sync = redis.Redis.from_url(v5_store.url)
    for _, fields in stream_entries(sync, keys.events):
        if (text := text_fields(fields)) is not None:
            ref.add(text)
    sync.close()
    orders = {j: int(after[j][1]) for j in listed}
    rng = random.Random(6)
    for _ in range(60):
        params = random_query(rng, ref)
        want = ref.query(params, orders)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == want, params
        assert await ex.jobs(page.job_ids) == [to_job(states[j], orders[j]) for j in page.job_ids]

    # The change log written by layout 5 still reads, and so do the entries this code writes next:
    # a new event on a migrated job logs its id ('u') and both states in the compact codec.
    old_entries = await client.xrange(keys.changes)
    assert old_entries and not any(UUID in f for _, f in old_entries)
    for change in decode_entries(old_entries):
        assert change.state.job_id in listed and change.handle == orders[change.state.job_id]
    job_id = next(j for j in sorted(listed) if states[j].terminal is None and not states[j].canceling)
    canceling = Event(event_id=str(uuid.uuid4()), type=EventType.CANCELING, job_id=job_id, occurred_at=2**52)
    await Projection(client, keys).apply([canceling])
    ((_, fields),) = await client.xrevrange(keys.changes, count=1)
    assert (
        fields[UUID] == uuid.UUID(job_id).bytes and record.is_compact(fields[b"s"]) and record.is_compact(fields[b"o"])
    )
    (change,) = decode_entries([(b"9999999999999-0", fields)])
    assert change.old == states[job_id] and change.state == fold(job_id, [canceling], states[job_id])
    assert change.job.status.value == "CANCELING" and change.job.id == job_id
