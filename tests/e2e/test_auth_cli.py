"""The auth modes of the real `jobreg` command: api refuses to run open, --no-auth warns, up runs open, token mints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from registry.auth.tokens import Verifier
from registry.settings import load_settings
from tests.conftest import free_port
from tests.harness import jobreg
from tests.topology import Store

ROOT = Path(__file__).resolve().parents[2]
SECRET = "cli-test-shared-secret-" + "k" * 32
P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    return {**env, **extra}


def wait_http(url: str, proc: subprocess.Popen[str], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "process exited"
        assert time.monotonic() < deadline, "did not come up"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_api_refuses_to_start_without_auth(store: Store) -> None:
    env = clean_env(JOBREG_REDIS_URL=store.url)
    done = jobreg("api", "--port", str(free_port()), env=env)
    assert done.returncode == 2
    assert "no authentication configured" in done.stderr and "--no-auth" in done.stderr
    conflict = jobreg("api", "--no-auth", env={**env, "JOBREG_AUTH_SECRET": SECRET})
    assert conflict.returncode == 2 and "conflicts" in conflict.stderr
    weak = jobreg("api", env={**env, "JOBREG_AUTH_SECRET": "short"})
    assert weak.returncode == 2 and "at least 32 bytes" in weak.stderr and "Traceback" not in weak.stderr
    missing = jobreg("api", env={**env, "JOBREG_AUTH_PUBLIC_KEY_FILE": "/nonexistent/key.pem"})
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_api_no_auth_warns_loudly_and_serves(store: Store) -> None:
    port = free_port()
    env = clean_env(JOBREG_REDIS_URL=store.url, JOBREG_PREFIX=f"cli{os.urandom(3).hex()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry.ops.cli", "api", "--port", str(port), "--no-auth"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v2/jobs").status_code == 200
    finally:
        _, err = stop(proc)
    assert "WARNING: --no-auth: authentication is OFF" in err
    assert "authentication is OFF: every caller sees every project's jobs" in err  # the app's own log line


def test_token_command() -> None:
    no_secret = jobreg("token", "--user", "alice", "--project", P1, env=clean_env())
    assert no_secret.returncode == 2 and "JOBREG_AUTH_SECRET is not set" in no_secret.stderr
    env = clean_env(JOBREG_AUTH_SECRET=SECRET)
    done = jobreg("token", "--user", "alice", "--project", P1, "--project", P2.upper(), "--ttl", "30m", env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    verifier = Verifier.from_settings(load_settings({}, auth_secret=SECRET))
    assert verifier is not None
    principal = verifier.verify(token)
    assert (principal.user_id, principal.projects, principal.is_admin) == ("alice", {P1, P2}, False)
    assert principal.expires_at is not None and 1790 < principal.expires_at - time.time() <= 1800
    admin = jobreg("token", "--user", "ops", "--admin", env=env)
    assert admin.returncode == 0 and verifier.verify(admin.stdout.strip()).is_admin
    for args, msg in (
        (["--user", "alice"], "at least one --project"),
        (["--user", "alice", "--project", "p1"], "not a UUID"),
        (["--user", "alice", "--project", P1, "--ttl", "soon"], "invalid TTL"),
    ):
        bad = jobreg("token", *args, env=env)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr


def test_up_runs_with_auth_off_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    # A secret in the environment (say, for minting) does not switch the embedded API to auth.
    env = clean_env(JOBREG_AUTH_SECRET=SECRET, JOBREG_PREFIX=f"up{os.urandom(3).hex()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "registry.ops.cli", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout_s=60)
        resp = httpx.get(f"http://127.0.0.1:{port}/api/v2/jobs")
        assert resp.status_code == 200, resp.text
    finally:
        out, err = stop(proc, signal.SIGINT)
    assert "auth is OFF in this embedded mode" in out
    if proc.returncode not in (0, -signal.SIGINT):
        pytest.fail(f"jobreg up exited {proc.returncode}\n{err}")
