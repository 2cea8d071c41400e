"""The README's examples, parsed out of README.md and run as written against a real `jobreg up --demo`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_up import clean_env, running_up
from tests.harness import wait_for
from tests.topology import standalone_only

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCUMENTED = "http://127.0.0.1:8000"
SEED_JOB = "0f8e3f0c-1c6b-4c1a-9b7e-3e1d2c3b4a59"

pytestmark = standalone_only(
    "runs `jobreg up --demo`, standalone by design (its own private redis-server or fakeredis)"
)


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def commands(block: str) -> list[str]:
    """Shell commands of a block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_the_readme_examples_work_as_written(tmp_path: Path) -> None:
    if shutil.which("redis-cli") is None or shutil.which("curl") is None:
        pytest.skip("redis-cli and curl are needed to run the README's shell examples")
    querying = section("Querying")
    curls = [c for b in blocks(querying, "sh") for c in commands(b) if c.startswith("curl ")]
    sdk = blocks(querying, "python")
    assert len(curls) >= 5 and len(sdk) >= 2
    with running_up(tmp_path, "--demo") as up:
        url = up.url

        def local(text: str) -> str:
            return text.replace(DOCUMENTED, url)

        wait_for(lambda: httpx.get(f"{url}/api/v2/jobs/{SEED_JOB}").status_code == 200, 60, "the demo's fixed batch")

        # Publishing, from the same directory, with the virtualenv's `jobreg` first on the PATH.
        env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        publishing = [c for b in blocks(section("Publishing events"), "sh") for c in commands(b)]
        # (lines with an `ID` placeholder are templates, not commands)
        runnable = [c for c in publishing if c.startswith(("redis-cli", "jobreg")) and not re.search(r"\bID\b", c)]
        assert len(runnable) >= 4
        for command in runnable:
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0 and "ERR" not in done.stdout, (command, done.stdout, done.stderr)
        for job in ("3c9e6a1d-7b2f-4e58-9d0a-6f1b2c3d4e5f", "5d6e7f80-1a2b-4c3d-8e4f-5a6b7c8d9e0f"):
            wait_for(lambda job=job: httpx.get(f"{url}/api/v2/jobs/{job}").status_code == 200, 30, f"{job} published")

        for command in curls:
            done = subprocess.run([*shlex.split(local(command)), "-sS", "--fail"], capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stderr)
            body: Any = httpx.Response(200, content=done.stdout).json()
            if "/healthz" in command:
                continue
            assert body["status"] == "success", (command, body)
            assert body["data"], f"empty answer to the README's {command}"

        namespace: dict[str, Any] = {}
        for code in sdk:
            exec(compile(local(code), "README.md", "exec"), namespace)  # the README's own code, as written
        page, batch, job = namespace["page"], namespace["batch"], namespace["job"]
        assert page.total > 0 and page.results and all(j.status == "DONE" for j in page.results)
        assert len(batch) >= 4 and {j.batch_id for j in batch} == {"11111111-1111-4111-8111-111111111111"}
        assert job.id == SEED_JOB and job.status == "DONE" and job.runs == 100
        up.stop(signal.SIGINT)
    assert up.proc.returncode == 0
