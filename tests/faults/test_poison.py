"""Case 4, poison: a job whose apply keeps failing (a real WRONGTYPE on its record) is retried a bounded
number of times, then dead-lettered with the reason, while every other event keeps flowing."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError

from registry.settings import load_settings
from registry.wire.deadletter import ERROR_FIELD, SOURCE_FIELD
from tests.conftest import RedisServer
from tests.faults.conftest import report
from tests.harness import (
    assert_registry_matches,
    assert_registry_matches_async,
    cluster,
    drained,
    group_state,
    jobreg,
    publish,
    wait_for,
)
from tests.reference import Reference, make_traffic
from tests.topology import standalone_only
from workers.consumer import Consumer, StoreError

SEED = 4
N_JOBS = 2_000
MAX_FAILURES = 4

pytestmark = standalone_only(
    "injects its fault into raw keys of one partition and follows one stream's group state; sets maxmemory"
)


def test_poison_job_is_retried_then_dead_lettered(own_redis: RedisServer, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    traffic = make_traffic(rng, N_JOBS, bad_rate=0.0)
    by_job: dict[str, int] = {}
    for e in traffic:
        by_job[e["job_id"].lower()] = by_job.get(e["job_id"].lower(), 0) + 1
    poison = next(j for j, n in by_job.items() if n >= 3)
    poisoned = [e for e in traffic if e["job_id"].lower() == poison]
    full, healthy = Reference(), Reference()
    for e in traffic:
        full.add(e)
        if e["job_id"].lower() != poison:
            healthy.add(e)
    first, later = traffic[: len(traffic) // 2], traffic[len(traffic) // 2 :]
    assert any(e["job_id"].lower() == poison for e in first)

    prefix = f"poison{os.urandom(3).hex()}"
    client = redis.Redis.from_url(own_redis.url)
    with cluster(
        own_redis.url,
        prefix,
        tmp_path,
        batch_size=100,
        block_ms=200,
        claim_idle_ms=1500,
        housekeeping_interval_s=1,
        max_apply_failures=MAX_FAILURES,
    ) as c:
        keys, group = c.keys, c.settings.group
        # The injected fault: the job's record key holds a string, so every apply of it gets WRONGTYPE.
        client.set(keys.job(poison), "not a hash")
        c.start_worker("a")
        c.start_worker("b")
        publish(client, keys.events, first)
        # The consumer keeps moving: later batches are applied while the poison is still being retried.
        in_first = sum(e["job_id"].lower() == poison for e in first)
        wait_for(lambda: group_state(client, keys.events, group) == (0, in_first), 60, "first half in", c.log_tail)
        publish(client, keys.events, later)
        wait_for(lambda: group_state(client, keys.events, group)[0] == 0, 60, "later batches delivered", c.log_tail)
        wait_for(
            lambda: group_state(client, keys.events, group)[1] == len(poisoned) or client.xlen(keys.dead) > 0,
            60,
            "everything but the poison acknowledged",
            c.log_tail,
        )
        assert client.xlen(keys.dead) == 0, "dead-lettered before the retries were used up"
        assert_registry_matches(own_redis.url, prefix, healthy)

        # Retried a bounded number of times, then dead-lettered with the reason.
        wait_for(lambda: drained(client, keys, group), 60, "poison dead-lettered", c.log_tail)
        dead = client.xrange(keys.dead)
        assert len(dead) == len(poisoned)  # type: ignore[arg-type]
        for _, fields in dead:  # type: ignore[union-attr]
            reason = fields[ERROR_FIELD.encode()].decode()
            assert f"applying failed {MAX_FAILURES} times" in reason and "WRONGTYPE" in reason, reason
            assert fields[b"job_id"].decode().lower() == poison
        sources = {f[SOURCE_FIELD.encode()] for _, f in dead}  # type: ignore[union-attr]
        assert len(sources) == len(poisoned), "an entry was dead-lettered twice"
        assert client.hlen(keys.failures) == 0 and client.hlen(keys.failure_counts) == 0
        assert_registry_matches(own_redis.url, prefix, healthy)
        c.check_alive()

        # The operator repairs the key and replays: the job is applied, exactly once.
        client.delete(keys.job(poison))
        out = jobreg("dead-letters", "replay", env=c.env, timeout=60)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: drained(client, keys, group), 60, "replay applied", c.log_tail)
        assert client.xlen(keys.dead) == 0
        assert_registry_matches(own_redis.url, prefix, full)
        logs = c.logs_text("worker-*.log")
        failures = logs.count("left pending for a retry")
    report(
        "poison",
        events=len(traffic),
        poison_entries=len(poisoned),
        failed_applies_before_dead_letter=MAX_FAILURES,
        failure_logs=failures,
        dead_lettered=len(poisoned),
        other_jobs_applied=len(healthy.jobs()),
        lost=0,
        duplicated=0,
    )
    client.close()


async def test_store_wide_errors_blame_no_entry(own_redis: RedisServer) -> None:
    # A real OOM (maxmemory below what is used) fails every apply: that is the store's fault, not the
    # entries'. Nothing may be counted towards dead-lettering, and all of it applies once memory is back.
    settings = load_settings({}, redis_url=own_redis.url, prefix="oom", block_ms=10, max_apply_failures=1)
    r = aioredis.Redis.from_url(own_redis.url)
    try:
        consumer = Consumer(r, settings)
        await consumer.ensure_group()
        traffic = make_traffic(random.Random(44), 50, bad_rate=0.0)
        ref = Reference()
        pipe = r.pipeline(transaction=False)
        for entry in traffic:
            ref.add(entry)
            pipe.xadd(consumer.keys.events, entry)  # type: ignore[arg-type]
        await pipe.execute()
        assert await consumer.step() == 0  # the (empty) own backlog first
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", 1)
        for attempt in range(3):
            if attempt:  # what run() does after an error: re-read our own pending entries
                consumer._backlog_from = "0"
            with pytest.raises((StoreError, OutOfMemoryError)):
                await consumer.step()
        assert await r.hlen(consumer.keys.failure_counts) == 0  # type: ignore[misc]
        assert await r.xlen(consumer.keys.dead) == 0
        await r.config_set("maxmemory", 0)
        while await consumer.step() or consumer._backlog_from is not None:
            pass
        consumer._backlog_from = "0"  # what run() does after an error: re-read our own pending entries
        while await consumer.step():
            pass
        assert (await r.xpending(consumer.keys.events, settings.group))["pending"] == 0
        assert await r.xlen(consumer.keys.dead) == 0
    finally:
        await r.aclose()
    await assert_registry_matches_async(own_redis.url, "oom", ref)
