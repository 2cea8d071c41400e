"""The embedded store for `jobreg up`: a private redis-server under ./.jobreg/, else in-process fakeredis."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from registry import lua
from registry.connection import sync_client
from registry.ops import children
from registry.store.record import REDIS_ARGS

log = logging.getLogger("jobreg.up")

READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0  # redis-server flushes its AOF on SIGTERM


class StoreFailed(Exception):
    """The embedded store did not start; the message says why and where to look."""


@dataclass(frozen=True)
class Store:
    url: str
    description: str
    persistent: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, alive: Callable[[], bool] | None = None, timeout: float = READY_TIMEOUT_S) -> None:
    """Wait until ``url`` answers PING; ``alive()`` (when given) False means the server is gone."""
    client = sync_client(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):  # BusyLoading: still reading its AOF
                if alive is not None and not alive():
                    raise StoreFailed("exited while starting") from None
                if time.monotonic() > deadline:
                    raise StoreFailed(f"did not answer within {timeout:.0f}s") from None
                time.sleep(0.05)
    finally:
        client.close()


@contextlib.contextmanager
def embedded_redis(data_dir: Path, keep_fds: tuple[int, ...] = ()) -> Iterator[Store]:
    """A store that lives as long as the context; ``keep_fds`` are inherited by a redis-server (the data
    directory's lock, so the lock lasts as long as the server using the directory)."""
    binary = shutil.which("redis-server")
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    if binary:
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir.resolve())]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", "redis.log"]
        args += REDIS_ARGS  # job records as listpacks: half their memory
        proc = children.start(args, stdout=subprocess.DEVNULL, pass_fds=keep_fds)
        try:
            try:
                _wait_ready(url, alive=lambda: proc.poll() is None)
            except StoreFailed as exc:
                raise StoreFailed(f"redis-server {exc}; see {data_dir / 'redis.log'}") from None
            yield Store(url, f"private redis-server (AOF on) with data in {data_dir}/", persistent=True)
        finally:
            if children.stop([proc], STOP_GRACE_S):
                log.warning("redis-server did not stop within %.0fs: killed", STOP_GRACE_S)
        return
    from fakeredis import TcpFakeServer

    lua.teach_fakeredis()  # it cannot parse the scripts' `#!lua` line otherwise
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _wait_ready(url)
        yield Store(url, "in-process fakeredis (no redis-server found): DATA LIVES IN MEMORY ONLY", persistent=False)
    finally:
        server.shutdown()
