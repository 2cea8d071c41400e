"""The benchmarks' bulk loader writes exactly what the apply path writes: every key, compared by content."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.benchmarks.bulk import BulkLoader
from tests.benchmarks.datagen import iter_jobs, job_events, make_plan
from tests.conftest import RedisServer
from tests.harness import snapshot

pytest.importorskip("numpy")


async def _apply_path(url: str, prefix: str, plan: Any, threshold: int) -> None:
    """What the benchmark's loader did until now: the Projection the worker uses, 1,000 jobs per apply."""
    client = aioredis.Redis.from_url(url)
    projection = Projection(client, Keys(prefix), threshold)
    for chunk in iter_jobs(plan, chunk_size=1000):
        await projection.apply([decode_event(fields) for job in chunk for fields in job_events(job)])
    await client.aclose()


@pytest.mark.parametrize(("n_jobs", "chunk", "threshold"), [(5000, 2048, 40), (1500, 1 << 16, 2048)])
async def test_bulk_load_writes_the_same_keys_and_bytes_as_the_apply_path(
    redis_server: RedisServer, n_jobs: int, chunk: int, threshold: int
) -> None:
    plan = make_plan(n_jobs, seed=5)
    applied, bulk = f"a{os.urandom(4).hex()}", f"b{os.urandom(4).hex()}"
    await _apply_path(redis_server.url, applied, plan, threshold)
    loader = BulkLoader(redis_server.url, bulk, threshold, retention=100_000, chunk=chunk)
    assert await asyncio.to_thread(loader.load, plan) == n_jobs
    r = redis.Redis.from_url(redis_server.url)
    want, got = snapshot(r, applied), snapshot(r, bulk)
    r.close()
    assert sorted(got) == sorted(want)
    kinds = {kind for kind, _ in want.values()}
    assert kinds == {"string", "hash", "sortindex", "set", "stream"}  # every family was compared
    differing = [key for key in want if got[key] != want[key]]
    assert not differing, f"{len(differing)} keys differ, e.g. {differing[:5]}"
