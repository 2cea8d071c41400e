"""`jobreg up --demo` leaves no job open behind it: what a crashed run left open is closed when the demo
starts again, and the jobs it has open are canceled when it stops. Other producers' jobs are not touched."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis

from registry.keys import Keys
from registry.ops.demo import PROJECTS, USERS
from registry.wire.publisher import Publisher
from tests.conftest import RedisServer
from tests.e2e.test_up import clean_env, running_up
from tests.harness import wait_for
from tests.topology import standalone_only

STALE = "5a1e0000-0000-4000-8000-000000000001"  # a demo job a crashed run left RUNNING
OTHERS = "5a1e0000-0000-4000-8000-000000000002"  # another producer's job in a demo project

pytestmark = standalone_only("`jobreg up --demo` starts and owns a standalone store by design")


def open_demo_jobs(url: str) -> int:
    params = [("project_id", p) for p in PROJECTS] + [("user_id", u) for u in USERS]
    params += [("status", s) for s in ("PENDING", "RUNNING", "CANCELING")]
    body = httpx.get(f"{url}/api/v2/jobs", params=[*params, ("limit", "1")]).json()
    return int(body["pagination"]["total"])


def test_the_demo_closes_what_it_left_open(redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = f"demo{os.urandom(3).hex()}"
    client = redis.Redis.from_url(redis_server.url)
    pub = Publisher(client, Keys(prefix))
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for job, user in ((STALE, USERS[0]), (OTHERS, "someone-else")):
        pub.created(job, occurred_at=an_hour_ago, batch_id=PROJECTS[1], project_id=PROJECTS[0], user_id=user, runs=1)
    pub.started(STALE, occurred_at=an_hour_ago)
    client.close()
    env = clean_env(JOBREG_REDIS_URL=redis_server.url, JOBREG_PREFIX=prefix)

    with running_up(tmp_path, "--demo", env=env) as up:

        def status(job: str) -> str | None:
            resp = httpx.get(f"{up.url}/api/v2/jobs/{job}")
            return resp.json()["data"]["status"] if resp.status_code == 200 else None

        wait_for(lambda: status(STALE) == "CANCELED", 60, "the stale demo job closed")
        stale = httpx.get(f"{up.url}/api/v2/jobs/{STALE}").json()["data"]
        assert stale["errors"] == ["demo restarted"]
        assert status(OTHERS) == "PENDING", "not the demo's job"
        wait_for(lambda: open_demo_jobs(up.url) > 0, 60, "the demo running jobs")
        _, err = up.stop(signal.SIGTERM)
    assert up.proc.returncode == 0, err

    # What the demo had open when it stopped is canceled (applied by the next worker on this store).
    with running_up(tmp_path, env=env) as again:
        wait_for(lambda: open_demo_jobs(again.url) == 0, 60, "no demo job left open")
        assert httpx.get(f"{again.url}/api/v2/jobs/{OTHERS}").json()["data"]["status"] == "PENDING"
        again.stop(signal.SIGTERM)
