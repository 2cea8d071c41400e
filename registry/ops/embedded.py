"""The embedded store for `jobreg up`: a private redis-server under ./.jobreg/, else in-process fakeredis."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            client.close()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[tuple[str, str]]:
    """Yield (redis_url, description) of a store that lives as long as the context."""
    binary = shutil.which("redis-server")
    port = _free_port()
    if binary:
        data_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir.resolve()),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--logfile",
                "redis.log",
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_ready(url)
            yield url, f"private redis-server (AOF on) with data in {data_dir}/"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_ready(url)
        yield url, "in-process fakeredis (no redis-server found): DATA LIVES IN MEMORY ONLY"
    finally:
        server.shutdown()
