"""Case 1, worker crashes: kill -9 workers again and again during 100,000 events; nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from pathlib import Path

from tests.faults.conftest import report
from tests.harness import assert_registry_matches, cluster, drained, publish, stop, wait_for
from tests.reference import Reference, make_traffic
from tests.topology import Store, sync_client

SEED = 1
N_JOBS = 34_000  # ~100,000 entries with 5% duplicates
MIN_KILLS = 12
WORKERS = ("fixed", "a", "b")  # "fixed" keeps its consumer name across restarts; the others get host-pid names


def test_kill_workers_during_ingest(own_store: Store, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    traffic = make_traffic(rng, N_JOBS, dup_rate=0.05, bad_rate=0.0)
    assert len(traffic) >= 100_000
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    prefix = f"crash{os.urandom(3).hex()}"
    client = sync_client(own_store.url)
    with cluster(
        own_store.url,
        prefix,
        tmp_path,
        batch_size=200,
        block_ms=200,
        claim_idle_ms=1500,
        housekeeping_interval_s=2,
        consumer_idle_ms=3000,
    ) as c:
        for name in WORKERS:
            c.start_worker(name, {"JOBREG_CONSUMER": "fixed"} if name == "fixed" else None)
        keys, group = c.keys, c.settings.group

        # Publish at a steady pace so the kills land while entries are in flight.
        published = threading.Event()
        errors: list[BaseException] = []

        def producer() -> None:
            try:
                pub = sync_client(own_store.url)
                for i in range(0, len(traffic), 1000):
                    publish(pub, keys.events, traffic[i : i + 1000])
                    time.sleep(0.12)
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
            time.sleep(rng.uniform(0.3, 1.5))
            name = rng.choice(WORKERS)
            stop(c.workers[name])  # SIGKILL: no clean-up, whatever it held stays pending
            kills += 1
            c.start_worker(name, {"JOBREG_CONSUMER": "fixed"} if name == "fixed" else None)
        thread.join()
        assert not errors, errors
        ingest_s = time.monotonic() - started

        drain_s = wait_for(lambda: drained(client, keys, group), 180, "pipeline drained", c.log_tail)
        c.check_alive()
        assert client.xlen(keys.dead) == 0, "a valid event was dead-lettered"
        assert client.hlen(keys.failures) == 0 and client.hlen(keys.failure_counts) == 0
        jobs = assert_registry_matches(own_store.url, prefix, ref)
        # Members left behind by the killed workers are pruned once idle with nothing pending.
        wait_for(
            lambda: len(client.xinfo_consumers(keys.events, group)) <= len(WORKERS),  # type: ignore[arg-type]
            30,
            "dead consumers pruned",
            c.log_tail,
        )
        logs = c.logs_text("worker-*.log")
        reclaimed = sum(int(n) for n in re.findall(r"reclaimed (\d+) idle entries", logs))
        assert reclaimed > 0, "kills left nothing pending? the test did not test reclaiming"
        assert "consumer step failed" not in logs, "a consumer loop hit an unexpected error"
        report(
            "worker_crashes",
            events_published=len(traffic),
            jobs=jobs,
            workers=len(WORKERS),
            kills_survived=kills,
            entries_reclaimed=reclaimed,
            dead_lettered=0,
            lost=0,
            duplicated=0,
            ingest_s=round(ingest_s, 1),
            drain_after_ingest_s=round(drain_s, 1),
        )
    client.close()
