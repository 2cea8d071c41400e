"""Every `jobreg` mistake gets a one-line message and a non-zero exit, never a traceback; a closed pipe is no error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.topology import Store

ROOT = Path(__file__).resolve().parents[2]
DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1
JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"
P1 = "22222222-2222-4222-8222-222222222222"
CREATED = ("created", JOB, "-f", f"batch_id={P1}", "-f", f"project_id={P1}", "-f", "user_id=u", "-f", "runs=1")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    command = [sys.executable, "-m", "registry.ops.cli", *args]
    return subprocess.run(command, env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=60)


CASES = [
    (("top",), {"JOBREG_REDIS_URL": "localhost:6379"}, 2, "must be a redis://, rediss:// or unix:// URL"),
    (("top",), {"JOBREG_REDIS_URL": "redis://localhost:notaport/0"}, 2, "is not usable"),
    (("top",), {"JOBREG_LOG_LEVEL": "verbose"}, 2, "JOBREG_LOG_LEVEL must be one of DEBUG, INFO"),
    (("top",), {"JOBREG_BATCH_SIZE": "many"}, 2, "invalid JOBREG_* setting"),
    (("publish", *CREATED), {"JOBREG_REDIS_URL": DOWN}, 1, "cannot reach redis://127.0.0.1:1/0"),
    (("dead-letters",), {"JOBREG_REDIS_URL": DOWN}, 1, "cannot reach redis://127.0.0.1:1/0"),
    (("dead-letters", "replay", "--set", "x"), {"JOBREG_REDIS_URL": DOWN}, 2, "expected NAME=VALUE, got 'x'"),
    (("dead-letters", "replay", "[ID]"), {"JOBREG_REDIS_URL": DOWN}, 2, "expected a stream entry id"),
    (("dead-letters", "replay", "--set", "=5"), {"JOBREG_REDIS_URL": DOWN}, 2, "expected NAME=VALUE"),
    (("publish", "created", JOB, "-f", "runs"), {"JOBREG_REDIS_URL": DOWN}, 2, "expected NAME=VALUE"),
    (("publish", "exploded", JOB), {"JOBREG_REDIS_URL": DOWN}, 2, "invalid choice: 'exploded'"),
    (("top", "--interval", "0"), {}, 2, "must be a positive number of seconds"),
    (("top", "--interval", "-1"), {}, 2, "must be a positive number of seconds"),
    (("top", "--interval", "soon"), {}, 2, "expected a number of seconds"),
    (("top", "--frames", "0"), {}, 2, "must be at least 1"),
    (("dead-letters", "--count", "-3"), {}, 2, "must be at least 1"),
    (("up", "--port", "70000"), {}, 2, "a port is 1-65535"),
    (("frobnicate",), {}, 2, "invalid choice: 'frobnicate'"),
    (("top", "--once", "--interval", "0.1"), {"JOBREG_REDIS_URL": DOWN}, 1, "cannot read redis://127.0.0.1:1/0"),
]


@pytest.mark.parametrize(("args", "env", "code", "message"), CASES, ids=[" ".join(c[0]) + str(c[1]) for c in CASES])
def test_a_mistake_is_one_line_and_a_non_zero_exit(
    args: tuple[str, ...], env: dict[str, str], code: int, message: str
) -> None:
    done = run(*args, **env)
    lines = done.stderr.splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert lines[0].startswith("jobreg"), lines[0]
    assert done.stdout == ""


def test_a_password_in_the_url_is_never_printed() -> None:
    done = run("publish", *CREATED, JOBREG_REDIS_URL="redis://:s3cret@127.0.0.1:1/0")
    assert done.returncode == 1 and "s3cret" not in done.stderr and "***" in done.stderr, done.stderr


def test_output_survives_a_closed_pipe(store: Store) -> None:  # on both topologies (the only one here with a store)
    env = {**os.environ, "JOBREG_REDIS_URL": store.url, "JOBREG_PREFIX": f"pipe{os.urandom(3).hex()}"}
    # `jobreg top --once | true`: the reader is gone before the frame is written.
    shell = f'{sys.executable} -m registry.ops.cli top --once --interval 0.3 | true; echo "rc=${{PIPESTATUS[0]}}" >&2'
    done = subprocess.run(["bash", "-c", shell], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.stderr.strip().endswith("rc=0"), done.stderr
