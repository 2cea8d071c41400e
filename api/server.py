"""Runs the API under uvicorn (what `jobreg api` calls): jobreg's log format, a bounded graceful shutdown."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

import uvicorn

from api.app import create_app
from api.http_limits import bounded_http
from api.sessions import Streams
from api.siblings import Sibling, Slots
from registry.auth.tokens import serving_verifier
from registry.ops import logs
from registry.settings import Settings

log = logging.getLogger("jobreg.api")
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Past the shutdown grace (spent waiting for connections), what the application's own shutdown
# (closing its Redis connections) may take before the process exits regardless.
STOP_MARGIN_S = 1.0


class _Server(uvicorn.Server):
    """uvicorn's server, ending open watch streams when it shuts down, and exiting in bounded time.

    uvicorn waits for every connection to finish before it exits, and a watch stream never
    does: without this, SIGTERM left `jobreg api` running as long as one client watched.
    """

    def __init__(self, config: uvicorn.Config, streams: Streams, stop_within_s: float) -> None:
        super().__init__(config)
        self.streams = streams
        self.deadline = StopDeadline(stop_within_s, f"did not stop within {stop_within_s:g}s of a stop signal")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn bounds the wait for connections, not its application's shutdown, and ignores a
        # second SIGTERM: a shutdown stuck on anything (a lost cancellation, a dead Redis) kept the
        # process alive forever. The first stop signal arms a deadline nothing can hold up.
        self.deadline.arm()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ended = self.streams.drain()
        if ended:
            log.info("ending %d watch streams (each told to reconnect)", ended)
        await super().shutdown(sockets)


class StopDeadline:
    """Ends this process (status 1) ``seconds`` after :meth:`arm` unless it ended before.

    A daemon thread, started up front and only woken by ``arm``: it runs whatever the event loop is
    stuck on, and a signal handler that arms it starts no thread (that could deadlock on threading's
    own locks, held by the code the signal interrupted). It writes its line to stderr itself, without
    the logging module's locks.
    """

    def __init__(self, seconds: float, why: str) -> None:
        self.seconds, self.why = seconds, why
        self._armed = threading.Event()
        threading.Thread(target=self._run, name="jobreg-stop-deadline", daemon=True).start()

    def arm(self) -> None:
        self._armed.set()

    def _run(self) -> None:
        self._armed.wait()
        time.sleep(self.seconds)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(OSError):
            os.write(2, f"{stamp} ERROR   {log.name}: {self.why}: exiting now\n".encode())
        os._exit(1)


def processes(settings: Settings) -> int:
    """How many API processes to run: the setting, or one per core this process may use."""
    return settings.api_processes if settings.api_processes > 0 else max(1, len(os.sched_getaffinity(0)))


def run_api(settings: Settings, host: str, port: int, *, no_auth: bool = False, embedded: bool = False) -> None:
    """Serve; raises AuthConfigError when auth is not configured and ``no_auth`` was not asked for.

    ``embedded``: run by `jobreg up`, which announces the API (auth off included) itself. With
    more than one process (``api_processes``), this process binds the socket, forks the servers
    (each accepts on the shared socket) and supervises them (see :func:`_supervise`).
    """
    serving_verifier(settings, no_auth)
    n = processes(settings)
    if n == 1:
        _serve(settings, host, port, embedded=embedded)
        return
    # Bound here, before the fork, so every process accepts on it (the way uvicorn binds: IPv6 for an IPv6 host).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    slots = Slots(n)
    children: list[int] = []
    supervisor = os.getpid()
    for index in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's coverage is the served requests
            _end_with_parent(supervisor)
            status = 0
            try:
                _serve(settings, host, port, embedded=embedded, sock=sock, sibling=Sibling(slots, index))
            except SystemExit as exc:  # uvicorn's own exit (a failed startup)
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("API process %d failed", index)
                status = 1
            finally:
                os._exit(status)
        children.append(pid)
    sock.close()
    _supervise(children, embedded)


def _end_with_parent(supervisor: int) -> None:
    """Ask Linux to SIGTERM this process when its supervisor dies, even by SIGKILL (no orphaned servers)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        # It died between the fork and the request, which then never fires. No handler is installed
        # yet: SIGTERM's default action ends this process at once.
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(children: list[int], embedded: bool) -> None:
    """Forward SIGTERM/SIGINT to the API processes and wait for them; one exiting on its own stops the rest.

    A process that died takes its connections with it; restarting it here would hide a crash loop,
    so the whole API stops and whoever runs it (`jobreg up`, a service manager) restarts it.
    """
    if not embedded:
        log.info("serving with %d processes", len(children))
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    alive, failed = set(children), False
    while alive:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        if not stopping:
            failed = failed or os.waitstatus_to_exitcode(status) != 0
            log.error("API process %d exited (status %d): stopping the others", pid, status)
            forward(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)


def _serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    embedded: bool,
    sock: socket.socket | None = None,
    sibling: Sibling | None = None,
) -> None:
    app = create_app(settings, announce_open=not embedded and (sibling is None or sibling.index == 0), sibling=sibling)
    # Litestar's default logging config takes over the root logger when the app is built: take it back,
    # so the whole process logs in one format.
    logs.configure(settings.log_level, quiet_lifecycle=embedded)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's loggers propagate to ours
        # Only when its lines would be written: uvicorn builds each line's arguments (the client's
        # address, the quoted path and query) before the logger drops them.
        access_log=(not embedded or settings.log_level == "DEBUG")
        and logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
        http=bounded_http(settings.http_max_header_bytes),
        # Streams told to stop end at once; this bounds the wait for clients that do not read
        # (under `jobreg up`'s own grace period, so a stop is never a kill).
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    server = _Server(config, app.state.streams, settings.shutdown_grace_s + STOP_MARGIN_S)
    server.run(sockets=None if sock is None else [sock])
