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

pytest.importorskip("numpy")


def _content(r: redis.Redis, key: bytes) -> tuple[str, Any]:
    kind = r.type(key).decode()
    if kind == "string":
        return kind, r.get(key)
    if kind == "hash":
        return kind, r.hgetall(key)
    if kind == "zset":
        return kind, r.zrange(key, 0, -1, withscores=True)
    if kind == "set":
        return kind, sorted(r.smembers(key))
    if kind == "stream":
        return kind, [fields for _, fields in r.xrange(key)]
    raise AssertionError(f"unexpected {kind} at {key!r}")


def _sort_index(r: redis.Redis, base: bytes) -> list[tuple[bytes, float]]:
    """A sort index's entries in order (registry/store/lua/sortlib.lua: top -> pages -> buckets), after
    checking that its counts (per bucket, per page, in all) agree with them."""
    out = []
    for page in r.zrange(base + b":t", 0, -1):
        pid = int.from_bytes(page[-4:], "big")
        in_page = 0
        for bucket in r.zrange(base + b":p:%d" % pid, 0, -1):
            bid = int.from_bytes(bucket[-4:], "big")
            rows = r.zrange(base + b":b:%d" % bid, 0, -1, withscores=True)
            assert int(r.hget(base + b":pn:%d" % pid, bid) or 0) == len(rows)
            in_page += len(rows)
            out += rows
        assert int(r.hget(base + b":tn", pid) or 0) == in_page
    assert int(r.hget(base + b":tn", "n") or 0) == len(out)
    return out


def _snapshot(r: redis.Redis, prefix: str) -> dict[bytes, tuple[str, Any]]:
    """Every key under ``prefix`` (named without it) and its content; a sort index's keys as one
    entry, its entries in order (the apply path's inserts and the loader's bulk build cut them into
    buckets differently)."""
    out = {}
    for key in r.scan_iter(match=f"*{prefix}*", count=1000):
        base, sep, _ = key.partition(b":sx:")
        if sep:
            index = base + sep + key[len(base) + 4 :].split(b":")[0]
            out[index.replace(prefix.encode(), b"P")] = ("sortindex", _sort_index(r, index))
        else:
            out[key.replace(prefix.encode(), b"P")] = _content(r, key)
    return out


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
    want, got = _snapshot(r, applied), _snapshot(r, bulk)
    r.close()
    assert sorted(got) == sorted(want)
    kinds = {kind for kind, _ in want.values()}
    assert kinds == {"string", "hash", "sortindex", "set", "stream"}  # every family was compared
    differing = [key for key in want if got[key] != want[key]]
    assert not differing, f"{len(differing)} keys differ, e.g. {differing[:5]}"
