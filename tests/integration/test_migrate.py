"""`jobreg migrate` on a registry written by the layout-4 code (tests/fixtures/layout4.rdb), as real processes.

The fixture holds the events it was built from, so the reference here is folded from the same stream.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from api.app import create_app
from registry.keys import Keys
from registry.lua import source
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.settings import Settings, load_settings
from registry.store import indexes, layout, migrate, record
from tests.conftest import RedisServer, layout_fixture_store
from tests.harness import ROOT, jobreg, stream_entries, text_fields
from tests.query_params import parse_params
from tests.reference import Reference, random_query

PREFIX = "v4"  # the fixture's (tests/fixtures/make_layout4.py)
BATCH = 50
HEX = "0123456789abcdef"
ORDERS = ("creation_order", "created_at", "updated_at", "start_timestamp", "end_timestamp", "runs", "id")


def clean_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    return {**env, "JOBREG_REDIS_URL": url, "JOBREG_PREFIX": PREFIX, **extra}


@pytest.fixture
def v4_store() -> Iterator[RedisServer]:
    """A private redis-server loaded with the layout-4 fixture."""
    with layout_fixture_store(4) as server:
        yield server


@pytest.fixture
async def client(v4_store: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(v4_store.url)
    yield c
    await c.aclose()


class CountingProxy:
    """A TCP relay to Redis that counts the client's commands naming ``marker`` (a script's sha1).

    With ``hold_after``, the command that would exceed it is never forwarded, nor anything after:
    the client hangs mid-run exactly there, ready to be killed.
    """

    def __init__(self, port: int, marker: bytes, hold_after: int | None = None) -> None:
        self.target = port
        self.marker = marker
        self.hold_after = hold_after
        self.seen = 0
        self.held = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._relay, args=(conn, upstream), daemon=True).start()

    def _relay(self, down: socket.socket, up: socket.socket) -> None:
        with down, up:
            while not self.held.is_set():
                ready, _, _ = select.select([down, up], [], [], 0.2)
                for side in ready:
                    data = side.recv(65536)
                    if not data:
                        return
                    if side is down and self.marker in data:
                        if self.hold_after is not None and self.seen >= self.hold_after:
                            self.held.set()
                            return
                        self.seen += data.count(self.marker)
                    (up if side is down else down).sendall(data)

    def close(self) -> None:
        self.listener.close()


def sha(script: str) -> bytes:
    return hashlib.sha1(source("registry.store", script).encode()).hexdigest().encode()


async def reference(url: str, client: aioredis.Redis, keys: Keys) -> tuple[Reference, dict[str, int]]:
    """The reference folded from the fixture's own events, and each listed job's handle."""
    ref = Reference()
    sync = redis.Redis.from_url(url)
    for _, fields in stream_entries(sync, keys.events):
        text = text_fields(fields)
        if text is not None:
            ref.add(text)
    sync.close()
    ids = list(ref.jobs())
    orders = {j: h for j, h in zip(ids, await record.handles(client, keys, ids), strict=True) if h}
    return ref, orders


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


async def test_layout4_is_refused_naming_migrate(v4_store: RedisServer) -> None:
    env = clean_env(v4_store.url)
    worker = jobreg("worker", env=env, timeout=60)
    assert worker.returncode == 3, worker.stderr
    assert (
        f"jobreg worker: the store holds layout 4, this jobreg needs layout {indexes.LAYOUT}: run `jobreg migrate`"
        in one_line(worker.stderr)
    )
    api = jobreg("api", "--no-auth", "--port", "1", env=env, timeout=60)
    assert api.returncode == 3, api.stderr
    assert "jobreg api: the store holds layout 4" in api.stderr and "`jobreg migrate`" in api.stderr
    # An API that started before the store answered refuses each store route with the same message.
    settings = load_settings({}, redis_url=v4_store.url, prefix=PREFIX)
    async with AsyncTestClient(create_app(settings)) as c:
        for path in ("/api/v2/jobs", "/healthz"):
            resp = await c.get(path)
            assert resp.status_code == 503, resp.text
            assert "run `jobreg migrate`" in resp.json()["message"]
    # Refusing wrote nothing: the store still reads as layout 4.
    sync = redis.Redis.from_url(v4_store.url)
    assert sync.get(Keys(PREFIX).layout) is None
    sync.close()


async def test_migrate_killed_midway_resumes_then_answers_match_reference(
    v4_store: RedisServer, client: aioredis.Redis
) -> None:
    keys = Keys(PREFIX)
    jobs = int(await client.get(keys.seq) or 0)
    assert jobs > 4 * BATCH and not await client.exists(*keys.id_hex.values())

    # First run: relayed until its fourth rebuild call, which never reaches Redis; then killed.
    proxy = CountingProxy(v4_store.port, sha("migrate_idhex"), hold_after=4)
    env = clean_env(f"redis://127.0.0.1:{proxy.port}/0")
    command = [sys.executable, "-m", "registry.ops.cli", "migrate", "--batch", str(BATCH)]
    first = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.held.wait(60), "the migration never reached its fourth call"
    finally:
        first.kill()
        first.wait()
        proxy.close()
    state = await layout.read(client, keys)
    assert (state.version, state.migrating_to) == (4, 5)
    # The first EVALSHA of a fresh server answers NOSCRIPT (redis-py then loads the script): three ran.
    assert state.next_handle == 1 + 3 * BATCH
    assert state.refusal() == (
        f"the store is being migrated from layout 4 to 5 ({3 * BATCH} of {jobs} jobs): "
        "wait for `jobreg migrate` to finish, or run it again to resume"
    )

    # Second run resumes from the cursor: only the remaining handles' calls.
    proxy = CountingProxy(v4_store.port, sha("migrate_idhex"))
    second = jobreg("migrate", "--batch", str(BATCH), env=clean_env(f"redis://127.0.0.1:{proxy.port}/0"))
    proxy.close()
    assert second.returncode == 0, second.stderr
    assert proxy.seen == -(-(jobs - 3 * BATCH) // BATCH)
    assert "layout 4 -> 5: the bitmaps of each id's first hex digit" in second.stderr
    assert f"100% {jobs}/{jobs} jobs" in second.stderr
    assert "layout 5 -> 6: job records re-encoded in the compact state codec" in second.stderr
    assert "layout 6 -> 7: the six sort sets rebuilt as bucketed sort indexes" in second.stderr
    assert "layout 7 -> 8: the zone map of updated_at, from its value column" in second.stderr
    assert f"jobreg migrate: the store now holds layout {indexes.LAYOUT} (from 4," in second.stdout
    assert await client.get(keys.layout) == str(indexes.LAYOUT).encode() and not await client.exists(keys.migration)

    again = jobreg("migrate", env=clean_env(v4_store.url))
    assert again.returncode == 0 and f"already holds layout {indexes.LAYOUT}: nothing to do" in again.stdout

    # The bitmaps are those the layout-5 apply path writes: each listed job's handle under its digit.
    ref, orders = await reference(v4_store.url, client, keys)
    assert len(orders) == jobs
    for digit, key in keys.id_hex.items():
        bits = await client.get(key) or b""
        got = {i * 8 + b for i, byte in enumerate(bits) for b in range(8) if byte & (0x80 >> b)}
        assert got == {h for job_id, h in orders.items() if job_id.startswith(digit)}, digit

    # Every answer agrees with the reference: one-digit prefixes (now bitmaps) alone and combined,
    # and random queries over the whole grammar.
    ex = Executor(client, keys, load_settings({}, redis_url=v4_store.url, prefix=PREFIX))
    rng = random.Random(11)
    queries = [[("id__starts_with", d), ("order_by", o), ("limit", "7"), ("offset", "3")] for d in HEX for o in ORDERS]
    for _ in range(150):
        params = [(k, v) for k, v in random_query(rng, ref) if k != "id__starts_with"]
        queries.append([*params, ("id__starts_with", rng.choice(HEX + "ABCDEF"))])
    queries += [random_query(rng, ref) for _ in range(300)]
    for params in queries:
        want = ref.query(params, orders)
        page = await ex.run(plan(parse_params(params), keys))
        assert (page.total, page.job_ids) == want, params
    settings = load_settings({}, redis_url=v4_store.url, prefix=PREFIX)
    async with AsyncTestClient(create_app(settings)) as c:
        resp = await c.get("/api/v2/jobs", params={"id__starts_with": "a"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["pagination"]["total"] == ref.query([("id__starts_with", "a")], orders)[0]


async def test_finish_waits_for_handles_listed_during_the_migration(aredis: aioredis.Redis, keys: Keys) -> None:
    # A worker listed jobs 9 and 10 after the last rebuild call read seq = 8: no bump yet.
    await aredis.set(keys.seq, 10)
    await aredis.hset(keys.migration, mapping={"to": 5, "next": 9})
    finish = aredis.register_script(source("registry.store", "migrate_finish"))
    assert await finish(keys=[keys.seq, keys.migration, keys.layout], args=[5]) == 0
    assert await aredis.get(keys.layout) is None and await aredis.exists(keys.migration)
    await aredis.hset(keys.migration, "next", 11)
    assert await finish(keys=[keys.seq, keys.migration, keys.layout], args=[5]) == 1
    assert await aredis.get(keys.layout) == b"5" and not await aredis.exists(keys.migration)


async def test_version_stamped_on_an_empty_registry_only(aredis: aioredis.Redis, keys: Keys) -> None:
    assert (await layout.read(aredis, keys)).version == indexes.LAYOUT
    assert await aredis.get(keys.layout) == str(indexes.LAYOUT).encode()
    other = Keys(keys.prefix + "x")
    await aredis.set(other.seq, 3)  # data written before versions existed
    state = await layout.read(aredis, other)
    assert state.version == layout.UNVERSIONED and await aredis.get(other.layout) is None
    assert "run `jobreg migrate`" in (state.refusal() or "")


async def test_newer_layout_refused_by_everything(aredis: aioredis.Redis, settings: Settings, keys: Keys) -> None:
    await aredis.set(keys.layout, indexes.LAYOUT + 1)
    env = {**clean_env(settings.redis_url), "JOBREG_PREFIX": settings.prefix}
    for command in (("migrate",), ("worker",)):
        done = jobreg(*command, env=env, timeout=60)
        assert done.returncode == 3, done.stderr
        assert f"the store holds layout {indexes.LAYOUT + 1}, newer than this jobreg understands" in one_line(
            done.stderr
        )
    with pytest.raises(Exception, match="newer"):
        await migrate.migrate(aredis, keys)
