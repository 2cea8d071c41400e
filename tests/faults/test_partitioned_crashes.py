"""Worker crashes on a registry of four partitions: kill -9 workers (router and partition consumers alike)
during ingest through `<prefix>:events` and straight into the partition streams; nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from pathlib import Path

import redis
import redis.asyncio as aioredis

from registry.keys import Keys
from registry.partition import Partitions
from registry.wire.publisher import stream_for
from tests.conftest import RedisServer
from tests.faults.conftest import report
from tests.harness import assert_partitions_match, cluster, drained_partitions, publish, stop, wait_for
from tests.reference import Reference, make_traffic
from tests.topology import standalone_only

SEED = 14
N_JOBS = 8_000  # ~24,000 entries with 5% duplicates
MIN_KILLS = 8
WORKERS = ("fixed", "a", "b")
P = 4

pytestmark = standalone_only("P = 4 on one server by design; on a cluster: test_cluster_worker")


def _check(url: str, parts: Partitions, ref: Reference) -> int:
    async def go() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            return await assert_partitions_match(client, parts, ref)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_kill_workers_of_a_partitioned_registry(own_redis: RedisServer, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    traffic = make_traffic(rng, N_JOBS, dup_rate=0.05, bad_rate=0.0)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    prefix = f"pcrash{os.urandom(3).hex()}"
    parts = Partitions(prefix, P)
    ingress = Keys(prefix).ingress
    client = redis.Redis.from_url(own_redis.url)
    with cluster(
        own_redis.url,
        prefix,
        tmp_path,
        partitions=P,
        batch_size=200,
        block_ms=200,
        claim_idle_ms=1500,
        housekeeping_interval_s=2,
        consumer_idle_ms=3000,
    ) as c:
        for name in WORKERS:
            c.start_worker(name, {"JOBREG_CONSUMER": "fixed"} if name == "fixed" else None)
        group = c.settings.group
        published = threading.Event()
        errors: list[BaseException] = []

        def producer() -> None:
            # Alternate chunks: the contract's stream (through the router) and each job's partition stream.
            try:
                pub = redis.Redis.from_url(own_redis.url)
                for n, i in enumerate(range(0, len(traffic), 500)):
                    chunk = traffic[i : i + 500]
                    if n % 2 == 0:
                        publish(pub, ingress, chunk)
                    else:
                        pipe = pub.pipeline(transaction=False)
                        for entry in chunk:
                            pipe.xadd(stream_for(Keys(prefix), parts, entry), entry)  # type: ignore[arg-type]
                        pipe.execute()
                    time.sleep(0.1)
                pub.close()
            except BaseException as exc:
                errors.append(exc)
            finally:
                published.set()

        thread = threading.Thread(target=producer, daemon=True)
        started = time.monotonic()
        thread.start()
        kills = 0
        while kills < MIN_KILLS or not published.is_set():
            time.sleep(rng.uniform(0.3, 1.2))
            name = rng.choice(WORKERS)
            stop(c.workers[name])  # SIGKILL: whatever it held, on any stream, stays pending
            kills += 1
            c.start_worker(name, {"JOBREG_CONSUMER": "fixed"} if name == "fixed" else None)
        thread.join()
        assert not errors, errors
        ingest_s = time.monotonic() - started

        drain_s = wait_for(lambda: drained_partitions(client, parts, group), 180, "every stream drained", c.log_tail)
        c.check_alive()
        assert client.xlen(Keys(prefix).dead) == 0, "a valid event was dead-lettered"
        assert client.get(Keys(prefix).partitions) == str(P).encode()
        jobs = _check(own_redis.url, parts, ref)
        logs = c.logs_text("worker-*.log")
        reclaimed = sum(int(n) for n in re.findall(r"reclaimed (\d+) idle entries", logs))
        assert "consumer step failed" not in logs, "a consumer loop hit an unexpected error"
        report(
            "partitioned_worker_crashes",
            partitions=P,
            events_published=len(traffic),
            jobs=jobs,
            kills_survived=kills,
            entries_reclaimed=reclaimed,
            lost=0,
            duplicated=0,
            ingest_s=round(ingest_s, 1),
            drain_after_ingest_s=round(drain_s, 1),
        )
    client.close()
