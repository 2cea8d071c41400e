"""`jobreg up` as a real process: it records its store for the other commands, keeps its data directory to
itself, checks its port first, and stops everything it started on SIGTERM, SIGINT and SIGHUP (or its death)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, free_port
from tests.harness import healthy, wait_for
from tests.topology import standalone_only

P1 = "22222222-2222-4222-8222-222222222222"
B1 = "11111111-1111-4111-8111-111111111111"

pytestmark = standalone_only("`jobreg up` starts and owns a standalone store by design")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    return {**env, **extra}


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "registry.ops.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=60)


@dataclass
class Up:
    proc: subprocess.Popen[str]
    port: int
    cwd: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> list[int]:
        """Pids whose parent is `up` (the store, the worker, the API)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                    found.append(int(entry.name))
        return found

    def stop(self, sig: int) -> tuple[str, str]:
        self.proc.send_signal(sig)
        return self.proc.communicate(timeout=60)


@contextmanager
def running_up(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Up]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry.ops.cli", "up", "--port", str(port), *args],
        cwd=cwd,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = Up(proc, port, cwd)
    try:
        wait_for(lambda: proc.poll() is None and healthy(up.url), 60, "jobreg up serving", lambda: _output(proc))
        yield up
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _output(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        return "(still running)"
    out, err = proc.communicate()
    return out + err


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # a zombie has ended; only its parent's wait is due


def test_commands_find_the_store_up_started(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        job = str(uuid.uuid4())
        published = cli(
            "publish", "created", job, "-f", f"batch_id={B1}", "-f", f"project_id={P1}", "-f", "user_id=ann",
            "-f", "runs=5", cwd=tmp_path,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        wait_for(lambda: httpx.get(f"{up.url}/api/v2/jobs/{job}").status_code == 200, 30, "the job listed")

        url = cli("redis-url", cwd=tmp_path)
        assert url.returncode == 0 and re.fullmatch(r"redis://127\.0\.0\.1:\d+/0\n", url.stdout), url
        # Elsewhere, --data-dir names the directory.
        elsewhere = cli("redis-url", "--data-dir", str(tmp_path / ".jobreg"), cwd=Path("/"))
        assert elsewhere.stdout == url.stdout
        top = cli("top", "--once", "--interval", "0.1", cwd=tmp_path)
        assert top.returncode == 0 and re.search(r"^jobs\s+1\s", top.stdout, re.M), top
        dead = cli("dead-letters", cwd=tmp_path)
        assert dead.returncode == 0 and dead.stderr == "", dead

        # A second `up` on the same directory leaves it alone and says why, whatever its port.
        second = cli("up", "--port", str(free_port()), cwd=tmp_path)
        assert second.returncode == 1
        assert "another `jobreg up` is running with data in .jobreg/" in second.stderr
        assert f"API {up.url}" in second.stderr and "Traceback" not in second.stderr

        # Another directory, the same port: refused before anything starts.
        taken = cli("up", "--port", str(up.port), "--data-dir", str(tmp_path / "other"), cwd=tmp_path)
        assert taken.returncode == 1
        assert f"cannot serve the API on 127.0.0.1:{up.port}" in taken.stderr and "in use" in taken.stderr
        assert "API on" not in taken.stdout and "store:" not in taken.stdout
        out, err = up.stop(signal.SIGTERM)
    redis_url = url.stdout.strip()
    assert f"Redis {redis_url}" in out and f"redis-cli -u {redis_url}" in out, out
    assert out.count("auth is OFF") == 1 and "auth is OFF" not in err, (out, err)
    # After `up`, the commands no longer find a store there, and say which one they use instead.
    after = cli("redis-url", cwd=tmp_path)
    assert after.stdout.strip() == "redis://127.0.0.1:6379/0"
    assert not (tmp_path / ".jobreg" / "store.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_stops_everything_up_started(tmp_path: Path, sig: signal.Signals) -> None:
    with running_up(tmp_path) as up:
        kids = up.children()
        assert len(kids) == 3, "redis-server, worker, API"
        redis_port = int(cli("redis-url", cwd=tmp_path).stdout.strip().rsplit(":", 1)[1].split("/")[0])
        # A browser's open watch stream must not hold the API past its graceful shutdown.
        with httpx.stream("GET", f"{up.url}/api/v2/jobs/watch", timeout=60) as watch:
            assert watch.status_code == 200
            out, err = up.stop(sig)
    assert up.proc.returncode == 0, err
    assert f"{sig.name}: stopping" in out
    assert "killed" not in out + err, "every child stopped by itself within the grace period"
    assert "Traceback" not in err, err
    assert all(gone(pid) for pid in kids)
    assert refused(up.port) and refused(redis_port)


def test_children_end_when_up_is_killed(tmp_path: Path) -> None:
    with running_up(tmp_path) as up:
        kids = up.children()
        up.proc.kill()
        up.proc.wait()
        wait_for(lambda: all(gone(pid) for pid in kids), 30, "children ended with their parent")
        assert refused(up.port)
    # The lock went with them: the directory is free again.
    with running_up(tmp_path) as again:
        out, _ = again.stop(signal.SIGTERM)
    assert again.proc.returncode == 0 and "store:" in out


def test_up_on_an_existing_redis_records_its_prefix(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = f"up{os.urandom(3).hex()}"
    env = clean_env(JOBREG_REDIS_URL=redis_server.url, JOBREG_PREFIX=prefix)
    with running_up(tmp_path, env=env) as up:
        job = str(uuid.uuid4())
        # No JOBREG_* here: the record gives both the URL and the prefix.
        done = cli("publish", "created", job, "-f", f"batch_id={B1}", "-f", f"project_id={P1}", "-f", "user_id=u",
                   "-f", "runs=1", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for(lambda: httpx.get(f"{up.url}/api/v2/jobs/{job}").status_code == 200, 30, "the job listed")
        up.stop(signal.SIGTERM)
    assert up.proc.returncode == 0
    assert not refused(redis_server.port), "an existing Redis is not `up`'s to stop"
