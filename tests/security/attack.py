"""What the attacks share: an authenticated stack of real processes, tokens, raw sockets, and a process's memory."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt

from registry.auth.tokens import mint
from registry.settings import load_settings
from tests.e2e.stack import Stack, running_stack
from tests.topology import Store

SECRET = "security-suite-shared-secret-" + "s" * 32
JOBS = "/api/v2/jobs"


@contextmanager
def secured_stack(store: Store, logs: Path, **env: Any) -> Iterator[Stack]:
    """Workers and an API with authentication on (HS256 shared secret), on loopback."""
    # One API process: the bounds under test (watch streams, memory) are per process, and the
    # memory checks read that process's RSS (api_pid), which a supervisor of several would hide.
    full = {"JOBREG_AUTH_SECRET": SECRET, "JOBREG_WATCH_HEARTBEAT_S": "1", "JOBREG_API_PROCESSES": "1", **env}
    with running_stack(store, logs, env=full) as stack:
        yield stack


def token(user: str, projects: list[str], *, admin: bool = False, **claims: Any) -> str:
    settings = load_settings({}, auth_secret=SECRET)
    minted = mint(settings, user, projects, admin=admin)
    if not claims:
        return minted
    body = jwt.decode(minted, SECRET, algorithms=["HS256"], audience=settings.auth_audience)
    return jwt.encode({**body, **claims}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def api_pid(stack: Stack) -> int:
    return stack.procs[-1].pid  # running_stack starts the API last


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def settled_rss_mb(pid: int, samples: int = 6, every_s: float = 0.5) -> float:
    """The highest of a few samples: memory a moment after the work, not at an instant."""
    highest = 0.0
    for _ in range(samples):
        highest = max(highest, rss_mb(pid))
        time.sleep(every_s)
    return highest


def raw_request(url: str, head: bytes, *, rcvbuf: int | None = None) -> socket.socket:
    """A connected socket that sent ``head`` (a request line and headers), for clients that misbehave."""
    host, _, port = url.removeprefix("http://").partition(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window it advertises
    sock.connect((host, int(port)))
    sock.sendall(head)
    return sock


def new_uuid() -> str:
    return str(uuid.uuid4())
