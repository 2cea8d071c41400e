"""Shared test harness: jobreg processes, publishing, waiting for the pipeline to drain, registry vs reference."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis
import redis.asyncio as aioredis

from registry.domain.model import Event, Status
from registry.errors import InvalidEvent
from registry.keys import Keys
from registry.nodes import connect, open_route
from registry.ops import children
from registry.partition import Partitions
from registry.query.executor import Executor
from registry.query.planner import plan
from registry.query.spec import JobQuery
from registry.route import Route
from registry.settings import Settings, load_settings
from registry.store import record
from registry.store.projection import Projection
from registry.wire.events import decode_event
from tests.conftest import RedisServer
from tests.reference import Reference, make_traffic, render_detail

ROOT = Path(__file__).resolve().parents[1]
RawEntry = Mapping[str, str] | Mapping[bytes, bytes]


def decode_all(entries: Iterable[Mapping[str, str]]) -> list[Event]:
    """The valid events among raw entries, decoded by jobreg itself."""
    out = []
    for fields in entries:
        with contextlib.suppress(InvalidEvent):
            out.append(decode_event(fields))  # type: ignore[arg-type]
    return out


async def project_traffic(
    client: aioredis.Redis, keys: Keys, rng: random.Random, n_jobs: int, batches: int = 1
) -> tuple[Reference, dict[str, int]]:
    """Random traffic of ``n_jobs`` jobs applied by the real projection (small member sets become
    bitmaps at 20, 50 jobs per call) and folded by the reference; each listed job's handle.
    With ``batches`` > 1 the events are applied in that many slices, in stream order, so jobs
    are listed first and changed later (what a worker sees; bounds widened step by step)."""
    traffic = make_traffic(rng, n_jobs)
    ref = Reference()
    for e in traffic:
        ref.add(e)
    projection = Projection(client, keys, set_to_bitmap_threshold=20, chunk=50)
    events = decode_all(traffic)
    step = -(-len(events) // batches)
    for i in range(0, len(events), step):
        await projection.apply(events[i : i + step])
    ids = list(ref.jobs())
    return ref, {j: h for j, h in zip(ids, await record.handles(client, keys, ids), strict=True) if h}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str] = str) -> float:
    """Poll ``condition`` until true; return the seconds it took, fail with ``what`` after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s\n{on_fail()}")
        time.sleep(0.05)
    return time.monotonic() - start


def healthy(url: str) -> bool:
    """The API at ``url`` answers ``/healthz`` with 200."""
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# ---------------------------------------------------------------- processes


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Run ``python -m registry.ops.cli ARGS`` with its output appended to ``log``.

    In a process group of its own (so :func:`stop` reaches what it forks, `jobreg api`'s
    processes), and ended by the kernel if this test process dies.
    """
    with log.open("ab") as out:
        return children.start(
            [sys.executable, "-m", "registry.ops.cli", *args], env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def jobreg(*args: str, env: Mapping[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m registry.ops.cli ARGS`` to completion, capturing its text output."""
    command = [sys.executable, "-m", "registry.ops.cli", *args]
    return subprocess.run(command, env=dict(env), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a :func:`spawn`ed process and everything in its process group (`jobreg api`'s forked
    servers too, even once their supervisor is gone): a test leaves nothing running behind it."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Cluster:
    """jobreg worker and API processes over one Redis, with their logs."""

    redis_url: str
    prefix: str
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api: subprocess.Popen[bytes] | None = None
    api_url: str = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "JOBREG_REDIS_URL": self.redis_url,
            "JOBREG_PREFIX": self.prefix,
            "JOBREG_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    def start_worker(self, name: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = spawn(["worker"], {**self.env, **(env or {})}, self.logs / f"worker-{name}.log")
        self.workers[name] = proc
        return proc

    def start_api(self, port: int) -> None:
        self.api_url = f"http://127.0.0.1:{port}"
        args = ["api", "--host", "127.0.0.1", "--port", str(port), "--no-auth"]
        self.api = spawn(args, self.env, self.logs / "api.log")
        wait_for(self._api_up, 60, "API start-up", self.log_tail)  # 2 shared cores: 30 s was seen to fall short

    def _api_up(self) -> bool:
        self.check_alive()
        try:
            return httpx.get(f"{self.api_url}/schema/openapi.json").is_success
        except httpx.TransportError:
            return False

    def log_tail(self, n: int = 3000) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-n:]}")
        return "\n".join(parts)

    def logs_text(self, pattern: str = "*.log") -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob(pattern)))

    def check_alive(self) -> None:
        for name, proc in [*self.workers.items(), ("api", self.api)]:
            if proc is not None:
                assert proc.poll() is None, f"{name} died (exit {proc.returncode})\n{self.log_tail()}"

    def stop_all(self) -> None:
        for proc in [*self.workers.values(), self.api]:
            stop(proc)


@contextlib.contextmanager
def cluster(redis_url: str, prefix: str, logs: Path, **extra_env: object) -> Iterator[Cluster]:
    c = Cluster(redis_url, prefix, logs, {f"JOBREG_{k.upper()}": str(v) for k, v in extra_env.items()})
    try:
        yield c
    finally:
        c.stop_all()
        print(c.log_tail())  # shown by pytest only when the test fails


def restart_redis(server: RedisServer, *extra: str) -> subprocess.Popen[bytes]:
    """Start redis-server again on the same port and directory (it reloads its AOF, if any)."""
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(server.port), "--bind", "127.0.0.1", "--save", "", "--dir", server.workdir, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.process = proc
    client = redis.Redis(port=server.port)
    try:
        wait_for(lambda: _pings(client), 30, "redis-server restart")
    finally:
        client.close()
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.BusyLoadingError:
        return False
    except redis.ConnectionError:
        return False


# ---------------------------------------------------------------- the stream


def publish(client: redis.Redis, stream: str, entries: Iterable[RawEntry], chunk: int = 500) -> list[str]:
    """XADD entries in pipelined chunks; return their entry ids."""
    ids: list[str] = []
    batch = list(entries)
    for i in range(0, len(batch), chunk):
        pipe = client.pipeline(transaction=False)
        for entry in batch[i : i + chunk]:
            pipe.xadd(stream, entry)  # type: ignore[arg-type]
        ids += [x.decode() if isinstance(x, bytes) else x for x in pipe.execute()]
    return ids


def group_state(client: redis.Redis, stream: str, group: str) -> tuple[int, int]:
    """(entries not yet delivered to the group, entries delivered but not acknowledged)."""
    try:
        groups: list[dict[str, Any]] = client.xinfo_groups(stream)  # type: ignore[assignment]
    except redis.ResponseError:
        return (int(client.xlen(stream)), 0)  # type: ignore[arg-type]
    for g in groups:
        if g["name"].decode() == group:
            last = client.xrevrange(stream, count=1)
            undelivered = 0 if not last or g["last-delivered-id"] == last[0][0] else 1  # type: ignore[index]
            return undelivered, int(g["pending"])
    return (int(client.xlen(stream)), 0)  # type: ignore[arg-type]


def drained(client: redis.Redis, keys: Keys, group: str) -> bool:
    """Every entry of the events stream delivered to the group and acknowledged; on a registry of several
    partitions (its stored P), every partition's stream too (``client``: tests/topology.py ``sync_client``)."""
    stored = client.get(keys.partitions)
    if stored and int(stored) > 1:  # type: ignore[arg-type]
        return drained_partitions(client, Partitions(keys.prefix, int(stored)), group)  # type: ignore[arg-type]
    return group_state(client, keys.events, group) == (0, 0)


def stream_entries(client: redis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    start = "-"
    while True:
        rows: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(stream, min=start, max="+", count=10_000)  # type: ignore[assignment]
        if not rows:
            return out
        out += rows
        start = "(" + rows[-1][0].decode()


def text_fields(fields: Mapping[bytes, bytes]) -> dict[str, str] | None:
    """An entry as text, or None if it is not valid UTF-8 (and so invalid anyway)."""
    try:
        return {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------- registry vs reference


async def _registry(url: str, prefix: str, job_ids: list[str]) -> tuple[dict[str, Any], dict[str, int], int]:
    client = aioredis.Redis.from_url(url)
    try:
        keys = Keys(prefix)
        executor = Executor(client, keys, load_settings({}, redis_url=url, prefix=prefix))
        got: dict[str, Any] = {}
        for i in range(0, len(job_ids), 2000):
            chunk = job_ids[i : i + 2000]
            for job_id, job in zip(chunk, await executor.details(chunk), strict=True):
                if job is not None:
                    got[job_id] = msgspec.to_builtins(job)
        totals = {}
        for status in Status:
            page = await executor.run(plan(JobQuery(statuses=(status,), limit=1), keys))
            totals[status.value] = page.total
        listed = (await executor.run(plan(JobQuery(limit=1), keys))).total
        return got, totals, listed
    finally:
        await client.aclose()


def assert_registry_matches(url: str, prefix: str, ref: Reference) -> int:
    """Job by job, the registry equals the reference fold; indexes count every job once. Return jobs checked.
    A registry of several partitions (say, on a cluster) is read partition by partition through its route."""
    return asyncio.run(assert_registry_matches_async(url, prefix, ref))


async def assert_registry_matches_async(url: str, prefix: str, ref: Reference) -> int:
    """``assert_registry_matches`` from inside an event loop."""
    route = await connect(load_settings({}, redis_url=url, prefix=prefix), stamp=False)
    try:
        if route.partitions.count > 1:
            return await assert_partitions_match(route.key_client(""), route.partitions, ref, route)
    finally:
        await route.aclose()
    return _compare(ref, *await _registry(url, prefix, sorted(ref.jobs())))


def _compare(ref: Reference, got: dict[str, Any], totals: dict[str, int], listed: int) -> int:
    expected = ref.jobs()
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    assert not missing, f"{len(missing)} jobs lost, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} jobs that should not exist, e.g. {sorted(unexpected)[:3]}"
    wrong = [jid for jid, job in expected.items() if got[jid] != render_detail(job, got[jid]["creation_order"])]
    assert not wrong, f"{len(wrong)} jobs differ from the fold, e.g. {wrong[0]}: {got[wrong[0]]}"
    orders = [j["creation_order"] for j in got.values()]
    assert len(set(orders)) == len(orders), "creation_order assigned twice"
    want: dict[str, int] = {}
    for job in expected.values():
        want[job["status"]] = want.get(job["status"], 0) + 1
    assert listed == len(expected), f"listed {listed} jobs, expected {len(expected)}"
    assert {s: n for s, n in totals.items() if n} == want, f"status index counts {totals} != {want}"
    return len(expected)


def _content(r: redis.Redis, key: bytes) -> tuple[str, Any]:
    kind = r.type(key).decode()
    if kind == "string":
        return kind, r.get(key)
    if kind == "hash":
        return kind, r.hgetall(key)
    if kind == "zset":
        return kind, r.zrange(key, 0, -1, withscores=True)
    if kind == "set":
        return kind, sorted(r.smembers(key))
    if kind == "stream":
        return kind, [fields for _, fields in r.xrange(key)]
    raise AssertionError(f"unexpected {kind} at {key!r}")


def _sort_index(r: redis.Redis, base: bytes) -> list[tuple[bytes, float]]:
    """A sort index's entries in order (registry/store/lua/sortlib.lua: top -> pages -> buckets), after
    checking that its counts (per bucket, per page, in all) agree with them."""
    out = []
    for page in r.zrange(base + b":t", 0, -1):
        pid = int.from_bytes(page[-4:], "big")
        in_page = 0
        for bucket in r.zrange(base + b":p:%d" % pid, 0, -1):
            bid = int.from_bytes(bucket[-4:], "big")
            rows = r.zrange(base + b":b:%d" % bid, 0, -1, withscores=True)
            assert int(r.hget(base + b":pn:%d" % pid, bid) or 0) == len(rows)
            in_page += len(rows)
            out += rows
        assert int(r.hget(base + b":tn", pid) or 0) == in_page
    assert int(r.hget(base + b":tn", "n") or 0) == len(out)
    return out


def snapshot(r: redis.Redis, prefix: str) -> dict[bytes, tuple[str, Any]]:
    """Every key under ``prefix`` (named without it) and its content (stream entries without their ids):
    two writers of the same data compare key by key. A sort index's keys count as one entry, its
    entries in order: two writers (the apply path's inserts, the bulk loader's build) may cut the
    same entries into buckets differently."""
    out = {}
    for key in r.scan_iter(match=f"*{prefix}*", count=1000):
        base, sep, _ = key.partition(b":sx:")
        if sep:
            index = base + sep + key[len(base) + 4 :].split(b":")[0]
            out[index.replace(prefix.encode(), b"P")] = ("sortindex", _sort_index(r, index))
        else:
            out[key.replace(prefix.encode(), b"P")] = _content(r, key)
    return out


# ---------------------------------------------------------------- partitioned registries (issue 14)


def drained_partitions(client: redis.Redis, partitions: Partitions, group: str) -> bool:
    """The ingress stream and every partition's stream delivered to the group and acknowledged."""
    streams = dict.fromkeys([partitions.keys[0].ingress, *(k.events for k in partitions.keys)])
    return all(group_state(client, stream, group) == (0, 0) for stream in streams)


async def partitioned_jobs(
    client: aioredis.Redis, partitions: Partitions, job_ids: list[str], route: Route | None = None
) -> dict[str, Any]:
    """Every listed job among ``job_ids`` as GET /api/v2/jobs/{id} shows it, read from the store partition by
    partition (creation_order = handle * P + i; each partition through ``route``'s client when given);
    asserts each job is listed in its own partition only."""
    got: dict[str, Any] = {}
    for i, keys in enumerate(partitions.keys):
        pipe = (route.client(i) if route else client).pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), [record.HANDLE, record.STATE])
        for job_id, (handle, blob) in zip(job_ids, await pipe.execute(), strict=True):
            if not handle or not blob:
                continue
            detail = record.render_detail(blob, job_id, int(handle) * partitions.count + i)
            if detail is None:
                continue
            assert job_id not in got, f"job {job_id} listed in two partitions"
            assert partitions.of(job_id) == i, f"job {job_id} listed in partition {i}, not {partitions.of(job_id)}"
            got[job_id] = msgspec.to_builtins(detail)
    return got


async def assert_partitions_match(
    client: aioredis.Redis, partitions: Partitions, ref: Reference, route: Route | None = None
) -> int:
    """``assert_registry_matches`` for a registry of any P, read from the store itself (records, handles and
    the status and listing bitmaps of every partition); return jobs checked."""
    expected = ref.jobs()
    got = await partitioned_jobs(client, partitions, sorted(expected), route)
    counts = []
    for i, keys in enumerate(partitions.keys):
        pipe = (route.client(i) if route else client).pipeline(transaction=False)
        pipe.bitcount(keys.all)
        for status in Status:
            pipe.bitcount(keys.status[status])
        counts += await pipe.execute()
    per = len(Status) + 1
    listed = sum(counts[p * per] for p in range(partitions.count))
    totals = {s.value: sum(counts[p * per + 1 + k] for p in range(partitions.count)) for k, s in enumerate(Status)}
    return _compare(ref, got, totals, listed)


async def until_partitions_match(
    url: str, partitions: Partitions, ref: Reference, timeout_s: float, log: Path, **options: Any
) -> None:
    """Wait until the registry on ``url`` (any node of a cluster) equals ``ref`` (workers still applying);
    past ``timeout_s`` the last mismatch is raised, after the tail of the workers' ``log``."""
    deadline = time.monotonic() + timeout_s
    while True:
        route = await open_route(url, partitions, **options)
        try:
            await assert_partitions_match(route.client(0), route.partitions, ref, route)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                print(log.read_text(errors="replace")[-5000:])
                raise
        finally:
            await route.aclose()
        await asyncio.sleep(0.5)
