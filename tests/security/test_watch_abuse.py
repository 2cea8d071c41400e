"""Issue 12, findings 3 and 7, and issue 13's shutdown, against a real `jobreg api`: watch streams that never read,
too many of them, a token whose expiry is a string, and SIGTERM with streams open.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry.wire.publisher import Publisher
from tests.e2e.stack import Stack
from tests.harness import wait_for
from tests.security.attack import JOBS, api_pid, bearer, new_uuid, raw_request, rss_mb, secured_stack, token
from tests.topology import Store, origin_position

WATCH = f"{JOBS}/watch"


def watch_head(stack: Stack, user_token: str) -> bytes:
    """A watch from the registry's first change (a catch-up of every job the caller may see)."""
    query = f"resource_version={origin_position(stack.redis_url, stack.prefix)}"
    return f"GET {WATCH}?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user_token}\r\n\r\n".encode()


def open_streams(stack: Stack) -> int:
    metrics = httpx.get(stack.url + "/metrics", headers=bearer(token("ops", [], admin=True))).text
    line = next(x for x in metrics.splitlines() if x.startswith("jobreg_watch_connections "))
    return int(float(line.split()[1]))


@pytest.fixture(scope="module")
def big_jobs(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """600 jobs with 60 KB of variables each in one project, as in the report."""
    project = new_uuid()
    logs = tmp_path_factory.mktemp("watch")
    with secured_stack(store, logs, JOBREG_WATCH_MAX_PER_CALLER="64", JOBREG_WATCH_MAX_STREAMS="64") as s:
        pub = Publisher(s.redis(), s.keys)
        blob = "x" * 60_000
        for i in range(600):
            pub.created(
                new_uuid(), batch_id=new_uuid(), project_id=project, user_id="u", runs=1, variables={"b": blob, "i": i}
            )
        s.wait_drained(timeout=120)
        yield s, project


def test_watchers_that_never_read_hold_bounded_memory_and_return_it(big_jobs: tuple[Stack, str]) -> None:
    stack, project = big_jobs
    pid = api_pid(stack)
    user = token("carol", [project])
    # Warm the process up (first watch, first catch-up) so the baseline includes what any use costs.
    with httpx.stream("GET", stack.url + WATCH, headers=bearer(user)) as warm:
        next(warm.iter_lines())
    baseline = rss_mb(pid)
    socks = [raw_request(stack.url, watch_head(stack, user), rcvbuf=4096) for _ in range(20)]
    try:
        wait_for(lambda: open_streams(stack) == 20, 30, "20 watch streams open")
        peak = 0.0
        for _ in range(10):  # the streams have 36 MB each to send and read none of it
            peak = max(peak, rss_mb(pid))
            time.sleep(0.5)
        # The report: ten such watchers took the API from 84 to 805 MB. Each now holds about
        # a quarter of JOBREG_WATCH_BUFFER_BYTES (1 MiB) read from the log, a few times over (the reply, the
        # decoded states, the JSON, the socket's buffer): measured +32 MB for these 20.
        assert peak < baseline + 150, (baseline, peak)
    finally:
        for sock in socks:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # a reset, as a vanished client
    wait_for(lambda: open_streams(stack) == 0, 30, "the streams to be closed")
    after = rss_mb(pid)
    # ...and the memory is given back once they are gone (measured +22 MB: pools, caches).
    assert after < baseline + 60, (baseline, peak, after)
    stack.check_alive()


def test_streams_per_caller_and_per_process_are_bounded(store: Store, tmp_path: Path) -> None:
    project = new_uuid()
    env = {"JOBREG_WATCH_MAX_PER_CALLER": "2", "JOBREG_WATCH_MAX_STREAMS": "3"}
    with secured_stack(store, tmp_path, **env) as stack:
        alice, bob, carol = (token(u, [project]) for u in ("alice", "bob", "carol"))
        held = [raw_request(stack.url, watch_head(stack, alice)) for _ in range(2)]
        wait_for(lambda: open_streams(stack) == 2, 30, "alice's streams open")
        third = httpx.get(stack.url + WATCH, headers=bearer(alice))
        assert third.status_code == 429 and third.headers["retry-after"]
        assert third.json()["message"] == "at most 2 open watch streams per caller"
        held.append(raw_request(stack.url, watch_head(stack, bob)))
        wait_for(lambda: open_streams(stack) == 3, 30, "bob's stream open")
        full = httpx.get(stack.url + WATCH, headers=bearer(carol))
        assert full.status_code == 503 and full.headers["retry-after"]
        assert "maximum of 3 watch streams" in full.json()["message"]
        held.pop(0).close()  # alice closes one: a place is free again, for anyone
        wait_for(lambda: open_streams(stack) == 2, 30, "the closed stream released")
        with httpx.stream("GET", stack.url + WATCH, headers=bearer(carol)) as ok:
            assert ok.status_code == 200
        for sock in held:
            sock.close()


def test_a_string_expiry_is_refused(store: Store, tmp_path: Path) -> None:
    """Finding 7: ``"exp": "1796000000"`` verified, and the watch stream then never expired."""
    with secured_stack(store, tmp_path) as stack:
        stringy = token("alice", [new_uuid()], exp=str(int(time.time()) + 3600))
        for path in (JOBS, WATCH, f"{JOBS}/stats"):
            resp = httpx.get(stack.url + path, headers=bearer(stringy))
            assert resp.status_code == 401 and resp.json()["message"] == "token exp claim must be a number"
        # A numeric expiry ends the stream with `event: expired` once passed.
        short = token("alice", [new_uuid()], exp=int(time.time()) + 2)
        with httpx.stream("GET", stack.url + WATCH, headers=bearer(short), timeout=30) as stream:
            lines = []
            for line in stream.iter_lines():
                lines.append(line)
                if line == "event: expired":
                    break
        assert "event: expired" in lines


def test_sigterm_ends_open_streams_with_a_reconnect_event_and_exits(store: Store, tmp_path: Path) -> None:
    """Issue 13: `jobreg api` never exited on SIGTERM while a watch stream was open."""
    with secured_stack(store, tmp_path) as stack:
        api = stack.procs[-1]
        user = token("alice", [new_uuid()])
        stuck = raw_request(stack.url, watch_head(stack, user), rcvbuf=4096)  # one that reads nothing
        with httpx.stream("GET", stack.url + WATCH, headers=bearer(user), timeout=30) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            wait_for(lambda: open_streams(stack) == 2, 30, "both streams open")
            api.send_signal(signal.SIGTERM)
            got: list[str] = []
            for line in lines:
                got.append(line)
                if line.startswith("data: ") and got[-2:-1] == ["event: reconnect"]:
                    break
        assert "event: reconnect" in got, got
        body = json.loads(got[-1].removeprefix("data: "))
        assert body["code"] == "503" and "reconnect" in body["message"]
        assert any(line.startswith("id: ") for line in got[got.index("event: reconnect") - 1 :])
        # Exits by itself: the grace period (2 s) bounds the stream that never reads.
        api.wait(timeout=20)
        stuck.close()
