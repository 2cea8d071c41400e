"""A `jobreg worker` process on a Redis Cluster rides out a master's failover (issue 14): its consumers and
arq's pool move to the promoted replica, and every event published before and after is applied; a `jobreg
api` process beside it answers for every partition again once its slot map is re-read (ClusterRoute.follow)."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from pathlib import Path

import httpx
import pytest
import redis

from registry.keys import Keys
from registry.partition import Partitions
from registry.store.partitions import CLUSTER_DEFAULT
from tests.cluster import LocalCluster, local_cluster
from tests.conftest import free_port
from tests.harness import healthy, spawn, stop, until_partitions_match, wait_for
from tests.reference import Reference, make_traffic
from workers.main import MAX_RESTART_BACKOFF_S

pytestmark = pytest.mark.slow

P = CLUSTER_DEFAULT


def _prefix_off_the_url_node(cluster: LocalCluster) -> str:
    """A prefix whose own tag (the stored P, arq's keys) is served by a master other than the URL's node:
    the one to kill, so that arq and the partitions on it must move while the URL's node stays up."""
    while True:
        prefix = f"f{os.urandom(3).hex()}"
        if cluster.node_of(Keys(prefix).partitions) is not cluster.nodes[0]:
            return prefix


def _listed(base: str) -> int | None:
    """The API's total over every partition (a scatter to all of them), or None while it cannot answer."""
    try:
        resp = httpx.get(f"{base}/api/v2/jobs", params={"limit": 10}, timeout=5)
    except httpx.TransportError:
        return None
    return int(resp.json()["pagination"]["total"]) if resp.status_code == 200 else None


async def test_a_worker_follows_a_failover(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None and not os.environ.get("JOBREG_TEST_REQUIRE_REDIS"):
        pytest.skip("a local Redis Cluster needs redis-server and redis-cli")
    with local_cluster(masters=3, replicas=1) as cluster:
        prefix = _prefix_off_the_url_node(cluster)
        keys = Keys(prefix)
        env = {
            **os.environ,
            "JOBREG_REDIS_URL": cluster.url,
            "JOBREG_PREFIX": prefix,
            "JOBREG_BLOCK_MS": "100",
            "JOBREG_HOUSEKEEPING_INTERVAL_S": "1",
            "JOBREG_LOG_LEVEL": "INFO",
        }
        log = tmp_path / "worker.log"
        worker = spawn(["worker"], env, log)
        port = free_port()
        api_log, base = tmp_path / "api.log", f"http://127.0.0.1:{port}"
        api = spawn(["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"], env, api_log)
        try:
            traffic = make_traffic(random.Random(5), 200)
            before, after = Reference(), Reference()
            half = len(traffic) // 2
            for entry in traffic[:half]:
                before.add(entry)
            for entry in traffic:
                after.add(entry)
            with redis.RedisCluster.from_url(cluster.url) as client:
                for entry in traffic[:half]:
                    client.xadd(keys.ingress, dict(entry))  # type: ignore[arg-type]
            await until_partitions_match(cluster.url, Partitions(prefix, P), before, 60, log)
            await asyncio.to_thread(wait_for, lambda: healthy(base), 30, "API up")
            assert _listed(base) == len(before.jobs())  # every partition answers (and the token key is read)

            victim = cluster.node_of(keys.partitions)
            with victim.client() as c:  # a replica still in its first sync cannot take over: wait for it
                for _ in range(30):
                    if c.execute_command("WAIT", 1, 1000) == 1:
                        break
                else:
                    raise AssertionError("the victim's replica did not catch up")
            cluster.kill(victim)
            await asyncio.to_thread(cluster.wait_for_failover, victim)
            with redis.RedisCluster.from_url(cluster.url) as client:
                for entry in traffic[half:]:
                    client.xadd(keys.ingress, dict(entry))  # type: ignore[arg-type]
            await until_partitions_match(cluster.url, Partitions(prefix, P), after, 90, log)
            # The API's follower re-reads the map every second here: the failed master's partitions answer again.
            await asyncio.to_thread(
                wait_for, lambda: _listed(base) == len(after.jobs()), 30, "the API answering for every partition"
            )
            assert worker.poll() is None, log.read_text(errors="replace")[-5000:]
            assert "restarting the consumers on the new ones" in log.read_text(errors="replace")
            # arq's run ended with its master; restarted (with a growing back-off) on the promoted replica.
            await asyncio.to_thread(
                wait_for, lambda: "arq's keys are served by" in log.read_text(errors="replace"), 30, "arq repointed"
            )
            # And its runs stay up there: no run ends after it was repointed (the back-off is at most 5 s).
            await asyncio.sleep(MAX_RESTART_BACKOFF_S + 2)
            text = log.read_text(errors="replace")
            assert "arq's run ended" not in text[text.index("arq's keys are served by") :], text[-3000:]
            assert worker.poll() is None
        finally:
            stop(api)
            stop(worker)
