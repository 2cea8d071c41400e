"""`jobreg top` as a real process against a running registry: counts, throughput, lag, latest changes."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from pathlib import Path

from tests.e2e.stack import ROOT, running_stack
from tests.harness import jobreg
from tests.reference import Reference, make_traffic
from tests.topology import Store


def top(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return jobreg("top", *args, env=env, timeout=timeout)


def test_top_shows_counts_throughput_and_latest_changes(store: Store, tmp_path: Path) -> None:
    traffic = make_traffic(random.Random(21), 80)
    ref = Reference()
    for entry in traffic:
        ref.add(entry)
    with running_stack(store, tmp_path) as stack:
        stack.publish(traffic)
        stack.wait_drained()

        once = top(stack.env, "--once", "--interval", "0.2")
        assert once.returncode == 0, once.stderr
        out = once.stdout
        assert "\x1b[" not in out, "no screen control codes when not on a terminal"
        statuses = Counter(j["status"] for j in ref.jobs().values())
        assert re.search(rf"^jobs\s+{len(ref.jobs())}\s", out, re.M), out
        for status in ("PENDING", "RUNNING", "DONE", "ERROR", "CANCELED"):
            assert f"{status} {statuses[status]:,}" in out, (status, out)
        assert re.search(r"lag 0\s+pending 0\s+dead letters " + str(ref.invalid), out), out
        assert "events 0.0/s" in out  # drained: nothing moves
        latest = [line for line in out.splitlines() if re.match(r"^\s+\d\d:\d\d:\d\d\.\d{3}\s+(added|modified)", line)]
        assert len(latest) == 12

        # Live: two refreshes while events flow; the second one shows a throughput.
        # Enough to keep flowing until top's second frame however slowly top starts (a loaded machine took
        # longer to start it than 200 jobs took to publish); the feeder stops when top is done.
        more = make_traffic(random.Random(22), 2000, bad_rate=0)
        stop = threading.Event()

        def feed() -> None:
            for i in range(0, len(more), 10):
                if stop.is_set():
                    return
                stack.publish(more[i : i + 10])
                time.sleep(0.02)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            live = top(stack.env, "--frames", "2", "--interval", "0.7")
        finally:
            stop.set()
            feeder.join()
        assert live.returncode == 0, live.stderr
        frames = [f for f in live.stdout.split("jobreg top ·") if f.strip()]
        assert len(frames) == 2
        rates = re.findall(r"events ([\d,.]+)/s", frames[1])
        assert rates and float(rates[0].replace(",", "")) > 0, frames[1]

        # On a terminal it redraws in place.
        leader, follower = pty.openpty()
        proc = subprocess.run(
            [sys.executable, "-m", "registry.ops.cli", "top", "--frames", "1", "--interval", "0.1"],
            env=stack.env,
            cwd=ROOT,
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=30,
        )
        os.close(follower)
        screen = os.read(leader, 65536).decode(errors="replace")
        os.close(leader)
        assert proc.returncode == 0
        assert screen.startswith("\x1b[H\x1b[2J") and "latest changes" in screen


def test_top_reports_an_unreachable_store(tmp_path: Path) -> None:
    env = {**os.environ, "JOBREG_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = top(env, "--once", "--interval", "0.1")
    assert result.returncode == 1
    assert "cannot read redis://127.0.0.1:1/0" in result.stderr


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the last holder of the terminal's other end closed it
            return
        if not chunk:
            return
        into.append(chunk)


def test_top_fits_an_80x24_terminal_colours_it_and_quits_on_q(store: Store, tmp_path: Path) -> None:
    # Long user ids and many changes: what used to overflow 80 columns and 24 rows.
    traffic = make_traffic(random.Random(23), 60)
    for entry in traffic:
        if entry.get("type") == "created":
            entry["user_id"] = "a-rather-long-user-name\x1b[31m-with-an-escape" + "x" * 60
    with running_stack(store, tmp_path) as stack:
        stack.publish(traffic)
        stack.wait_drained()

        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**stack.env, "TERM": "xterm"}
        env.pop("NO_COLOR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry.ops.cli", "top", "--interval", "0.2"],
            env=env,
            cwd=ROOT,
            stdin=follower,
            stdout=follower,
            stderr=follower,
            start_new_session=True,  # its own controlling terminal: the pty
        )
        os.close(follower)
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read_all, args=(leader, chunks), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while b"".join(chunks).count(b"\x1b[H\x1b[2J") < 3:
                assert proc.poll() is None and time.monotonic() < deadline, b"".join(chunks)[-2000:]
                time.sleep(0.05)
            os.write(leader, b"q")
            assert proc.wait(timeout=20) == 0, "q ends jobreg top"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[32m" in screen or "\x1b[31m" in screen, "statuses are coloured on a terminal"
    assert "\x1b[31m-with" not in screen, "escapes in event data are printed escaped, not obeyed"
    frames = [f for f in screen.split("\x1b[H\x1b[2J") if f.strip()]
    assert len(frames) >= 3
    for frame in frames:
        lines = ANSI.sub("", frame).replace("\r", "").split("\n")
        assert len(lines) <= 24, len(lines)
        assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
        assert "latest changes" in frame and "a-rather-l" in frame
