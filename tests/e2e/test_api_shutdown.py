"""`jobreg api` (several processes) stops in bounded time on SIGTERM: Redis up or gone, supervisor alive or not.

Each was seen to fail: a server process whose change feed missed its cancellation (Python 3.11's
``asyncio.wait_for``, under every redis-py command, can drop one) waited on it forever, ignored
every further SIGTERM, and outlived its test by tens of minutes with parent pid 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, free_port, start_redis_server
from tests.harness import ROOT, healthy, spawn, stop, wait_for
from tests.topology import standalone_only

GRACE_S = 2  # JOBREG_SHUTDOWN_GRACE_S: every API process must be gone within it
WATCHERS = 4  # spread over both processes (they accept on one socket)

pytestmark = standalone_only("kills its private redis-server under the API")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _watch(url: str, opened: list[int]) -> None:
    try:
        with httpx.stream("GET", f"{url}/api/v2/jobs/watch", params={"user_id": "nobody"}, timeout=30) as resp:
            opened.append(resp.status_code)
            for _ in resp.iter_bytes():
                pass
    except httpx.HTTPError:
        pass  # the server went away: what this test does to it


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = start_redis_server()  # this test kills it
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["redis-gone-supervisor-killed", "redis-up-supervisor-terminated"])
def test_every_api_process_exits_within_the_grace(private_redis: RedisServer, tmp_path: Path, how: str) -> None:
    env = {
        **os.environ,
        "JOBREG_REDIS_URL": private_redis.url,
        "JOBREG_PREFIX": f"stop{os.urandom(3).hex()}",
        "JOBREG_API_PROCESSES": "2",
        "JOBREG_SHUTDOWN_GRACE_S": str(GRACE_S),
        "JOBREG_WATCH_HEARTBEAT_S": "0.3",
        "JOBREG_LOG_LEVEL": "INFO",
    }
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "api.log"
    api = spawn(["api", "--host", "127.0.0.1", "--port", url.rpartition(":")[2], "--no-auth"], env, log)
    try:
        wait_for(lambda: api.poll() is None and healthy(url), 30, "API up", log.read_text)
        servers = _children(api.pid)
        assert len(servers) == 2, servers
        opened: list[int] = []
        for _ in range(WATCHERS):
            threading.Thread(target=_watch, args=(url, opened), daemon=True).start()
        wait_for(lambda: len(opened) == WATCHERS, 10, "watch streams open", log.read_text)
        assert opened == [200] * WATCHERS
        if how.startswith("redis-gone"):
            private_redis.stop()
            time.sleep(0.5)  # the feeds now fail and retry
        if how.endswith("supervisor-killed"):
            api.kill()  # the kernel SIGTERMs the servers (PR_SET_PDEATHSIG)
        else:
            api.send_signal(signal.SIGTERM)  # forwarded to the servers
        start = time.monotonic()
        while any(_running(pid) for pid in servers) and time.monotonic() - start < GRACE_S:
            time.sleep(0.05)
        left = [pid for pid in servers if _running(pid)]
        assert not left, f"API processes {left} still running {GRACE_S}s after SIGTERM\n{log.read_text()}"
        assert api.wait(timeout=GRACE_S) is not None
        assert "exiting now" not in log.read_text(), "they stopped by themselves, not by the hard deadline"
    finally:
        stop(api)


def test_a_stuck_shutdown_still_ends_the_process() -> None:
    # The backstop armed by the first stop signal (api/server.py): whatever the event loop waits on.
    code = "import time; from api.server import StopDeadline; StopDeadline(0.3, 'stuck').arm(); time.sleep(30)"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert time.monotonic() - start < 10
    assert done.returncode == 1
    assert "ERROR   jobreg.api: stuck: exiting now" in done.stderr
