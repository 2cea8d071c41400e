"""Workers killed (-9) again and again while they dead-letter a flood of garbage: each entry copied once.

Dead-lettering is copy-then-acknowledge (two slots on a cluster); a kill lands between the steps
now and then, leaving a copy whose entry is still pending. Whoever takes the entry over must reuse
that copy (no duplicate), and none may be lost. Kills land at random: the deterministic crash
points are in tests/integration/test_dead_letter_steps.py.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

from tests.faults.conftest import report
from tests.harness import cluster, drained, stop, stream_entries, wait_for
from tests.topology import Store, sync_client

SEED = 14
N_GARBAGE = 20_000
MIN_KILLS = 8
WORKERS = ("a", "b")


def test_kill_workers_while_dead_lettering(own_store: Store, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    prefix = f"dlk{os.urandom(3).hex()}"
    client = sync_client(own_store.url)
    with cluster(
        own_store.url,
        prefix,
        tmp_path,
        batch_size=50,
        block_ms=100,
        claim_idle_ms=1000,
        housekeeping_interval_s=1,
        consumer_idle_ms=3000,
    ) as c:
        for name in WORKERS:
            c.start_worker(name)
        keys, group = c.keys, c.settings.group
        published: list[bytes] = []
        kills = 0
        for i in range(0, N_GARBAGE, 2_000):
            pipe = client.pipeline(transaction=False)
            for n in range(i, i + 2_000):
                pipe.xadd(keys.events, {"event_id": f"x-{n}", "type": "paused", "job_id": "nope"})
            published += pipe.execute()
            time.sleep(rng.uniform(0.05, 0.4))
            name = rng.choice(WORKERS)
            stop(c.workers[name])
            kills += 1
            c.start_worker(name)
        while kills < MIN_KILLS:
            time.sleep(rng.uniform(0.05, 0.3))
            name = rng.choice(WORKERS)
            stop(c.workers[name])
            kills += 1
            c.start_worker(name)
        drain_s = wait_for(lambda: drained(client, keys, group), 180, "garbage drained", c.log_tail)
        wait_for(lambda: client.hlen(keys.dead_sources) == 0, 30, "markers swept", c.log_tail)
        c.check_alive()
        sources = Counter(fields[b"source_id"] for _, fields in stream_entries(client, keys.dead))
        doubled = {s: n for s, n in sources.items() if n > 1}
        assert not doubled, f"{len(doubled)} entries dead-lettered more than once"
        assert set(sources) == set(published), "an entry was lost"
        report("dead-letter crashes", garbage=N_GARBAGE, kills=kills, drain_s=round(drain_s, 1))
    client.close()
