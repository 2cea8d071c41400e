"""Memory per job: records and indexes, and apart from them the streams (events, change log).

Every key under the prefix is sized with ``MEMORY USAGE`` (pipelined, exact for streams and
small structures) and grouped by the shape of its name (ids and numbers replaced by ``*``).
"""

from __future__ import annotations

import re
from collections import defaultdict

import redis
from tqdm import tqdm

_VARIABLE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?<=:)[^:]*\d[^:]*(?=:|$)")


def _shape(key: str) -> str:
    return _VARIABLE.sub("*", key)


def sizes(r: redis.Redis) -> dict[tuple[str, str], tuple[int, int]]:
    """``{(type, key shape): (keys, bytes)}`` for every key of the (private) Redis."""
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
            group = groups[(kind.decode() if isinstance(kind, bytes) else str(kind), _shape(key.decode()))]
            group[0] += 1
            group[1] += int(size or 0)
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
