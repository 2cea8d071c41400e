"""A running jobreg (workers + API as real processes) on the test session's Redis, for the live-view tests."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from registry.keys import Keys
from tests.conftest import RedisServer, free_port
from tests.harness import healthy, spawn, stop, wait_for
from tests.topology import Store, sync_client, watch_position

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    url: str
    redis_url: str
    prefix: str
    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def redis(self) -> redis.Redis:
        """A client for the registry's keys (redis-py's cluster client on a cluster: one key per command)."""
        return sync_client(self.redis_url)

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(
            f"----- {p.name} -----\n{p.read_text(errors='replace')[-n:]}" for p in sorted(self.logs.glob("*.log"))
        )

    def check_alive(self) -> None:
        for proc in self.procs:
            assert proc.poll() is None, f"a process died early\n{self.log_tail()}"

    def publish(self, entries: list[dict[str, str]]) -> list[str]:
        client = self.redis()
        try:
            pipe = client.pipeline(transaction=False)
            for entry in entries:
                pipe.xadd(self.keys.events, entry)  # type: ignore[arg-type]
            return [x.decode() for x in pipe.execute()]
        finally:
            client.close()

    def drained(self, http: httpx.Client) -> bool:
        health = http.get(f"{self.url}/healthz").json()
        return bool(health["consumer_lag"] == 0 and health["pending"] == 0)

    def wait_drained(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while not self.drained(http):
                self.check_alive()
                assert time.monotonic() < deadline, f"not drained in {timeout}s\n{self.log_tail()}"
                time.sleep(0.05)

    def log_ids(self) -> list[str]:
        """The change log's entry ids, on a registry of one partition (a standalone store)."""
        client = self.redis()
        try:
            return [entry_id.decode() for entry_id, _ in client.xrange(self.keys.changes)]  # type: ignore[union-attr]
        finally:
            client.close()

    def position(self) -> str:
        """Where a watch stands now: the id of its latest event (on a cluster, the partitions' vector)."""
        return watch_position(self.redis_url, self.prefix)


@contextmanager
def running_stack(
    redis_server: RedisServer | Store, logs: Path, *, workers: int = 1, env: dict[str, Any] | None = None
) -> Iterator[Stack]:
    prefix = f"live{os.urandom(3).hex()}"
    port = free_port()
    full_env = {
        **os.environ,
        "JOBREG_REDIS_URL": redis_server.url,
        "JOBREG_PREFIX": prefix,
        "JOBREG_LOG_LEVEL": "INFO",
        "JOBREG_BLOCK_MS": "100",
        **{k: str(v) for k, v in (env or {}).items()},
    }
    stack = Stack(f"http://127.0.0.1:{port}", redis_server.url, prefix, full_env, logs)
    try:
        stack.procs = [spawn(["worker"], full_env, logs / f"worker{i}.log") for i in range(workers)]
        api = ["api", "--host", "127.0.0.1", "--port", str(port)]
        if not any(k.startswith("JOBREG_AUTH_") for k in (env or {})):
            api.append("--no-auth")
        stack.procs.append(spawn(api, full_env, logs / "api.log"))
        wait_for(lambda: (stack.check_alive(), healthy(stack.url))[1], 60, "API up", stack.log_tail)
        yield stack
    finally:
        for proc in stack.procs:
            stop(proc)  # the whole process group: `jobreg api`'s forked servers too
        print(stack.log_tail())  # shown by pytest only when the test fails
