"""Processes and data for the comparison: private Redis, jobreg and peer servers, tokens, loading.

Talks to jobreg through its command line and HTTP; of ``registry`` it only imports what loads
data (Projection, Keys, the event decoder, the settings), lazily, so restructuring elsewhere
does not break the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from typing import Any

import httpx
import redis
from tqdm import tqdm

from tests.benchmarks import pg
from tests.benchmarks.datagen import Plan, iter_jobs, job_events
from tests.conftest import RedisServer, free_port, start_redis_server

PREFIX = "bench"
#: One secret per run, shared by jobreg and the peer (at least 32 bytes, as jobreg requires).
SECRET = secrets.token_hex(32)


def layout_version() -> str:
    """The stored layout's version: a kept copy written with another one is stale."""
    from registry.store.indexes import LAYOUT

    return str(LAYOUT)


def start_redis(keep: str | None) -> RedisServer:
    """A private redis-server, set as the README recommends; with ``keep``, its data is kept there for the next run."""
    from registry.store.record import REDIS_ARGS

    if keep is None:
        return start_redis_server(extra_args=REDIS_ARGS)
    os.makedirs(keep, exist_ok=True)
    return start_redis_server(workdir=keep, dbfilename="bench.rdb", start_timeout_s=600, extra_args=REDIS_ARGS)


async def _load_jobreg(url: str, plan: Plan, chunk_jobs: int = 1000) -> tuple[int, float]:
    import redis.asyncio as aioredis

    from registry.keys import Keys
    from registry.settings import load_settings
    from registry.store.projection import Projection
    from registry.wire.events import decode_event

    client = aioredis.Redis.from_url(url)
    projection = Projection(client, Keys(PREFIX), load_settings({}).set_to_bitmap_threshold)
    n_events = 0
    t0 = time.perf_counter()
    with tqdm(total=plan.n_jobs, unit="job", unit_scale=True, desc="jobreg load") as bar:
        for chunk in iter_jobs(plan, chunk_size=chunk_jobs):
            events = [decode_event(fields) for job in chunk for fields in job_events(job)]
            await projection.apply(events)
            n_events += len(events)
            bar.update(len(chunk))
    await client.aclose()
    return n_events, time.perf_counter() - t0


def _migratable(kept: str, wanted: str) -> bool:
    """Whether the kept data is the wanted data in a layout `jobreg migrate` moves forward (4 onwards)."""
    from registry.store.layout import UNVERSIONED

    data, _, version = kept.rpartition(":")
    older = version.isdigit() and UNVERSIONED <= int(version) < int(layout_version())
    return older and data == wanted.rpartition(":")[0]


def _migrate(url: str) -> float:
    """Run `jobreg migrate` on the kept data; its wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBREG_")}
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "registry.ops.cli", "migrate"],
        env={**env, "JOBREG_REDIS_URL": url, "JOBREG_PREFIX": PREFIX},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def _bulk_load(url: str, plan: Plan) -> tuple[int, float]:
    from registry.settings import load_settings
    from tests.benchmarks.bulk import bulk_load

    settings = load_settings({})
    return bulk_load(url, PREFIX, plan, settings.set_to_bitmap_threshold, settings.change_log_retention)


def load_jobreg(r: redis.Redis, url: str, plan: Plan, keep: bool, bulk: bool = False) -> int:
    """Load ``plan`` through the Projection the worker uses (or reuse a kept copy): bytes it took.

    ``bulk``: write what that path writes column-wise instead (tests/benchmarks/bulk.py), for large N.
    """
    marker = f"{PREFIX}:loaded"
    wanted = f"{plan.n_jobs}:{plan.seed}:{layout_version()}"
    kept = (r.get(marker) or b"").decode()
    if keep and _migratable(kept, wanted):
        # The same data in an older layout: `jobreg migrate` is seconds where loading is minutes.
        before = int(r.info("memory")["used_memory"])
        migrated = _migrate(url)
        grown = int(r.info("memory")["used_memory"]) - before
        print(f"jobreg: migrated the kept data to layout {layout_version()} in {migrated:.1f} s")
        r.set(marker, wanted)
        r.incrby(f"{marker}:bytes", grown)
        r.save()
        kept = wanted
    if keep and kept == wanted:
        print(f"jobreg: reusing the kept data ({plan.n_jobs:,} jobs, seed {plan.seed})")
        return int(r.get(f"{marker}:bytes") or 0)
    r.flushall()
    before = int(r.info("memory")["used_memory"])
    if bulk:
        n_jobs, wall = _bulk_load(url, plan)
        how = f"bulk-loaded {n_jobs:,} jobs"
    else:
        n_events, wall = asyncio.run(_load_jobreg(url, plan))
        how = f"loaded {plan.n_jobs:,} jobs ({n_events:,} events)"
    grown = int(r.info("memory")["used_memory"]) - before
    print(f"jobreg: {how} in {wall:.0f} s")
    if keep:
        r.set(marker, wanted)
        r.set(f"{marker}:bytes", grown)
        r.save()
    return grown


def load_pg(conn: Any, plan: Plan, reuse: bool) -> None:
    """Load ``plan`` into PostgreSQL, or reuse the loaded table (adding indexes it lacks)."""
    if reuse and pg.loaded_plan(conn) == (plan.n_jobs, plan.seed):
        added = pg.ensure_indexes(conn)
        print(f"PostgreSQL: reusing the loaded table ({plan.n_jobs:,} jobs), {added} indexes added")
        return
    stats = pg.load(conn, plan)
    print(f"PostgreSQL: loaded {stats.rows:,} jobs in {stats.total_s:.0f} s incl. {len(pg.INDEXES)} indexes")


def sample_job_ids(conn: Any, plan: Plan, k: int = 200) -> list[str]:
    """``k`` job ids spread over the data (by creation order, so the same on every run)."""
    orders = [1 + i * plan.n_jobs // k for i in range(k)]
    rows = conn.execute(f"SELECT id FROM {pg.TABLE} WHERE creation_order = ANY(%s)", (orders,)).fetchall()
    return sorted(str(row[0]) for row in rows)


# --------------------------------------------------------------------------- processes


def _env(url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "JOBREG_REDIS_URL": url,
        "JOBREG_PREFIX": prefix,
        "JOBREG_LOG_LEVEL": "WARNING",
        "JOBREG_AUTH_SECRET": SECRET,
    }


def jobreg(
    command: list[str], url: str, prefix: str = PREFIX, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A ``jobreg`` command (``api``, ``worker``) running against ``url`` with auth on."""
    env = {**_env(url, prefix), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "registry.ops.cli", *command], env=env)


def jobreg_api(url: str, processes: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`jobreg api` on a free port, with ``processes`` API processes (default: the setting's own default)."""
    port = free_port()
    extra = {} if processes is None else {"JOBREG_API_PROCESSES": str(processes)}
    proc = jobreg(["api", "--host", "127.0.0.1", "--port", str(port)], url, extra_env=extra)
    return proc, f"http://127.0.0.1:{port}"


def peer_api(dsn: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "JOBREG_AUTH_SECRET": SECRET}
    cmd = [sys.executable, "-m", "tests.benchmarks.pg_service", "--port", str(port), "--dsn", dsn]
    return subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}"


def admin_token() -> str:
    """An admin bearer token minted by ``jobreg token`` (accepted by both servers)."""
    out = subprocess.run(
        [sys.executable, "-m", "registry.ops.cli", "token", "--admin", "--user", "bench", "--ttl", "7d"],
        env=_env("redis://unused", PREFIX),
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(base: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {base} did not come up")
