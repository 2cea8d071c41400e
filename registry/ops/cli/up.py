"""`jobreg up`: lock the data directory, start the store, worker and API, record the store, stop all on a signal."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx

from registry.connection import sync_client
from registry.ops import children
from registry.ops.datadir import DataDirBusy, DataDirLock, holding
from registry.ops.embedded import Store, StoreFailed, embedded_redis
from registry.ops.text import redact_url
from registry.settings import Settings

# Key material that `jobreg up` keeps away from its API child, which always runs with auth off.
AUTH_KEY_VARS = ("JOBREG_AUTH_SECRET", "JOBREG_AUTH_PUBLIC_KEY_FILE", "JOBREG_AUTH_JWKS_FILE", "JOBREG_AUTH_ALGORITHMS")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The API ends open watch streams within its own graceful timeout (api/server.py), the worker finishes
# the batch in hand; past this the children are killed (what they did not acknowledge is redelivered).
CHILD_GRACE_S = 10.0
READY_TIMEOUT_S = 60.0


class Stop(BaseException):
    """A stop signal arrived (BaseException: no `except Exception` on the way may swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def say(text: str, *, err: bool = False) -> None:
    print(f"jobreg: {text}", file=sys.stderr if err else sys.stdout, flush=True)


class Signals:
    """Stop signals: the first one stops `up` (raised as Stop); one more during the shutdown hurries it."""

    def __init__(self) -> None:
        self.stopping = False
        self.hurry = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            self.hurry = True
            return
        self.stopping = True
        raise Stop(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served on (None: it can), checked the way uvicorn will bind it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


@contextlib.contextmanager
def _store(settings: Settings, data_dir: Path, lock: DataDirLock) -> Iterator[Store]:
    if os.environ.get("JOBREG_REDIS_URL"):
        yield Store(settings.redis_url, f"Redis at {redact_url(settings.redis_url)} (JOBREG_REDIS_URL)", True)
    else:
        with embedded_redis(data_dir, keep_fds=(lock.fd,)) as store:
            yield store


def _redis_cli_line(url: str, password_removed: bool) -> str:
    return 'redis-cli -u "$JOBREG_REDIS_URL"' if password_removed else f"redis-cli -u {url}"


def _wait_api(url: str, procs: dict[str, subprocess.Popen[bytes]]) -> str | None:
    """Wait for the API to answer; the reason it will not (a child exited, or time ran out), else None."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                return f"the {name} exited with code {proc.returncode} while starting (its output is above)"
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return f"the API did not answer within {READY_TIMEOUT_S:.0f}s"


def cmd_up(settings: Settings, ns: argparse.Namespace) -> int:
    host, port = ns.host or settings.api_host, ns.port or settings.api_port
    data_dir = Path(ns.data_dir)
    signals = Signals()
    try:
        with signals.installed(), holding(data_dir) as lock:
            why = port_taken(host, port)
            if why is not None:
                say(f"cannot serve the API on {host}:{port}: {why}; choose another with --port", err=True)
                return 1
            with _store(settings, data_dir, lock) as store:
                return _run(settings, ns, host, port, store, lock, signals)
    except DataDirBusy as exc:
        say(f"{exc}; stop it first, or give this one another --data-dir", err=True)
        return 1
    except StoreFailed as exc:
        say(f"the store did not start: {exc}", err=True)
        return 1
    except Stop:
        return 0


def _run(
    settings: Settings, ns: argparse.Namespace, host: str, port: int, store: Store, lock: DataDirLock, signals: Signals
) -> int:
    api_url = f"http://{host}:{port}"
    record = lock.publish(store.url, settings.prefix, api_url)
    env = {**os.environ, "JOBREG_REDIS_URL": store.url, "JOBREG_PREFIX": settings.prefix}
    api_env = {k: v for k, v in env.items() if k not in AUTH_KEY_VARS}
    me = [sys.executable, "-m", "registry.ops.cli"]
    say(f"store: {store.description}")
    if not store.persistent:
        say("WARNING: install redis-server to keep data across restarts", err=True)
    cli = _redis_cli_line(record.redis_url, record.password_removed)
    say(f"Redis {record.redis_url}  (prefix {settings.prefix}; paste: {cli})")
    say(
        "auth is OFF in this embedded mode (no token needed, every project visible); "
        "run `jobreg api` with JOBREG_AUTH_* set to authenticate"
    )
    procs = {
        "worker": children.start([*me, "worker", "--embedded"], env),
        "API": children.start([*me, "api", "--host", host, "--port", str(port), "--no-auth", "--embedded"], api_env),
    }
    try:
        failed = _wait_api(api_url, procs)
        if failed is not None:
            say(failed, err=True)
            return 1
        say(f"API on {api_url}/api/v2/jobs  (OpenAPI: {api_url}/schema)")
        say(f"live dashboard on {api_url}/  (or `jobreg top` in a terminal). Press Ctrl-C to stop")
        if ns.demo:
            _demo(settings, store.url)
        while all(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
        name, proc = next((n, p) for n, p in procs.items() if p.poll() is not None)
        say(f"the {name} exited with code {proc.returncode}; stopping", err=True)
        return 1
    except Stop as stop:
        say(f"{signal.Signals(stop.signum).name}: stopping")
        return 0
    finally:
        signals.stopping = True  # a later signal only hurries what follows
        killed = children.stop(list(procs.values()), CHILD_GRACE_S, hurry=lambda: signals.hurry)
        for name, proc in procs.items():
            if proc in killed:
                say(f"the {name} did not stop within {CHILD_GRACE_S:.0f}s: killed", err=True)


def _demo(settings: Settings, url: str) -> None:

    from registry.keys import Keys
    from registry.ops.demo import run_demo
    from registry.wire.publisher import Publisher

    say("--demo: publishing simulated emulator/QPU traffic (fixed ids: see README, Querying)")
    client = sync_client(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        run_demo(Publisher(client, Keys(settings.prefix)), settings)
    finally:
        client.close()
