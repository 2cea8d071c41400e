"""Memory per job: records and indexes, and apart from them the streams (events, change log).

Every key under the prefix is sized with ``MEMORY USAGE`` (pipelined, exact for streams and
small structures) and grouped by the shape of its name (ids and numbers replaced by ``*``).

Standalone, on a kept copy (``compare --keep DIR``; the copy is only read, never saved):

    .venv/bin/python -m tests.benchmarks.memory --keep /work/bench/<name>-1m [--redis-arg ...]

prints the whole breakdown (every key shape, its encoding, bytes per job), e.g. with
``--redis-arg=--hash-max-listpack-value --redis-arg=256`` to see what a server setting changes
(the RDB is re-encoded as it loads).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
from collections import defaultdict

import redis
from tqdm import tqdm

_VARIABLE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=:)[^:]*\d[^:]*(?=:|$)")


def _shape(key: str) -> str:
    return _VARIABLE.sub("*", key)


def sizes(r: redis.Redis, encodings: dict[str, str] | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(type, key shape): (keys, bytes)}`` for every key of the (private) Redis.

    With ``encodings``, also fills it with each shape's ``OBJECT ENCODING`` (of its first key).
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    batch: list[bytes] = []
    n_keys = int(r.dbsize())

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        for key in batch:
            pipe.type(key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        for key, kind, size in zip(batch, replies[::2], replies[1::2], strict=True):
            shape = _shape(key.decode())
            group = groups[(kind.decode() if isinstance(kind, bytes) else str(kind), shape)]
            group[0] += 1
            group[1] += int(size or 0)
            if encodings is not None and shape not in encodings:
                encodings[shape] = (r.object("encoding", key) or b"").decode()  # type: ignore[union-attr]
        batch.clear()

    with tqdm(total=n_keys, unit="key", unit_scale=True, desc="memory usage") as bar:
        for key in r.scan_iter(count=1000):  # a private Redis: every key is ours
            batch.append(key)
            if len(batch) >= 1000:
                bar.update(len(batch))
                flush()
        bar.update(len(batch))
        flush()
    return {k: (v[0], v[1]) for k, v in groups.items()}


def report(r: redis.Redis, prefix: str, n_loaded: int, grown: int, per_key: bool = True) -> None:
    """Print bytes per job (records + indexes) and the streams beside them."""
    print(
        f"\nmemory: loading {n_loaded:,} jobs grew Redis's used_memory by {grown / 2**20:,.1f} MiB = "
        f"{grown / n_loaded:,.0f} B/job (target <= 700 B/job records + indexes)"
    )
    if not per_key:
        return
    from registry.keys import Keys

    n_jobs = int(r.bitcount(Keys(prefix).all)) or n_loaded
    groups = sizes(r)
    stores = {k: v for k, v in groups.items() if k[0] != "stream"}
    streams = {k: v for k, v in groups.items() if k[0] == "stream"}
    store_bytes = sum(b for _, b in stores.values())
    print(
        f"  now {n_jobs:,} jobs listed: records + indexes {store_bytes / 2**20:,.1f} MiB = "
        f"{store_bytes / n_jobs:,.0f} B/job (sum of MEMORY USAGE; allocator overhead not included)"
    )
    for (kind, shape), (keys, size) in sorted(stores.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"    {size / n_jobs:8.1f} B/job  {keys:>9,} {kind:<5} {shape}")
    for (_kind, shape), (keys, size) in sorted(streams.items(), key=lambda kv: -kv[1][1]):
        names = [k for k in r.scan_iter(match=shape.replace("*", "?*"), count=1000, _type="stream")][:1]
        entries = int(r.xlen(names[0])) if keys == 1 and names else 0
        per_entry = f", {size / entries:,.0f} B/entry over {entries:,} retained entries" if entries else ""
        print(f"  stream {shape} ({keys} keys): {size / 2**20:,.1f} MiB = {size / n_jobs:,.0f} B/job{per_entry}")


def breakdown(r: redis.Redis, prefix: str) -> None:
    """Every key shape: keys, encoding, MEMORY USAGE per listed job, and the totals."""
    from registry.keys import Keys

    n_jobs = int(r.bitcount(Keys(prefix).all))
    encodings: dict[str, str] = {}
    groups = sizes(r, encodings)
    info = r.info("memory")
    print(f"{n_jobs:,} listed jobs; used_memory {int(info['used_memory']) / n_jobs:,.0f} B/job")
    print(f"{'B/job':>9} {'keys':>10}  {'type':<6} {'encoding':<10} shape")
    total = 0.0
    for (kind, shape), (keys, size) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        per_job = size / n_jobs
        total += 0 if kind == "stream" else per_job
        print(f"{per_job:9.1f} {keys:>10,}  {kind:<6} {encodings.get(shape, ''):<10} {shape}")
    print(f"{total:9.1f} B/job records + indexes (streams apart)")


def scratch_dir(keep: str, user: str) -> str:
    return f"{keep.rstrip('/')}.{user}-scratch"


def serve(keep: str, redis_args: list[str], user: str = "memory") -> tuple[subprocess.Popen[bytes], redis.Redis]:
    """A redis-server on a scratch link of ``keep``'s RDB (``--save ""``: the kept data is never written).

    Remove ``scratch_dir(keep, user)`` when done.
    """
    from tests.conftest import free_port

    scratch = scratch_dir(keep, user)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    os.link(os.path.join(keep, "bench.rdb"), os.path.join(scratch, "bench.rdb"))
    port = free_port()
    binary = shutil.which("redis-server") or "redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", scratch, "--dbfilename", "bench.rdb", *redis_args]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    deadline = time.monotonic() + 600
    while True:
        try:
            if r.ping():
                break
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return proc, r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", required=True, help="a kept copy (compare --keep DIR)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--redis-arg", action="append", default=[], help="extra redis-server argument")
    args = parser.parse_args()
    proc, r = serve(args.keep, args.redis_arg)
    try:
        breakdown(r, args.prefix)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(scratch_dir(args.keep, "memory"), ignore_errors=True)


if __name__ == "__main__":
    main()
