"""A kept copy with an under-load burst's events folded in, for in-process A/B runs of the query path
(tests/benchmarks/redis_time.py) on the data a loaded run leaves: deterministic command counts per query,
where the live run's latencies say more about a busy machine than about the engine.

Run from the repository root, on a copy (it is changed and saved)::

    cp -a KEPT COPY
    python -m tests.benchmarks.loaded_copy --keep COPY --jobs 1000000 --events 200000 --load-shape tail
    python -m tests.benchmarks.redis_time run --keep COPY --jobs 1000000 --out tail.jsonl

The events are the publisher's (tests/benchmarks/tailload.py; 5,000 events/s for their clock), folded by
the projection the worker uses, in chunks of 500 as a worker's apply calls take them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from tests.benchmarks import harness, pg, tailload
from tests.benchmarks.datagen import make_plan


async def fold(url: str, events: Sequence[dict[str, str]], chunk: int = 500) -> float:
    """Apply ``events`` through the worker's projection; the wall seconds it took."""
    from registry.keys import Keys
    from registry.settings import load_settings
    from registry.store.projection import Projection
    from registry.wire.events import decode_event

    client = aioredis.Redis.from_url(url)
    projection = Projection(client, Keys(harness.PREFIX), load_settings({}).set_to_bitmap_threshold)
    t0 = time.perf_counter()
    with tqdm(total=len(events), unit="event", unit_scale=True, desc="fold") as bar:
        for i in range(0, len(events), chunk):
            part = events[i : i + chunk]
            await projection.apply([decode_event(fields) for fields in part])
            bar.update(len(part))
    await client.aclose()
    return time.perf_counter() - t0


def shape_events(load: tailload.Load, n: int, rate: float, seed: int) -> list[dict[str, str]]:
    """The fields of the ``n`` events the publisher would send for ``load``."""
    if load.shape == "tail":
        assert load.plan is not None
        return tailload.tail_events(load.plan, load.unfinished, n, rate, seed)
    from tests.benchmarks.datagen import iter_jobs, job_events

    out: list[dict[str, str]] = []
    for chunk in iter_jobs(make_plan(max(1000, n), seed), chunk_size=1000):
        for job in chunk:
            out += job_events(job)
            if len(out) >= n:
                return out[:n]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True, metavar="DIR", help="a copy of the kept data (changed)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=5000, help="events/s of the load's clock")
    parser.add_argument("--load-shape", choices=tailload.LOAD_SHAPES, default="tail")
    parser.add_argument("--dsn", default=pg.DEFAULT_DSN, help="PostgreSQL holding the same data (unfinished jobs)")
    args = parser.parse_args(argv)
    plan = make_plan(args.jobs, args.data_seed)
    conn = pg.connect(args.dsn)
    load = tailload.load_of(args.load_shape, plan, conn)
    conn.close()
    events = shape_events(load, args.events, args.rate, 7)
    server = harness.start_redis(args.keep)
    try:
        wall = asyncio.run(fold(server.url, events))
        r = redis.Redis.from_url(server.url)
        r.save()
        r.close()
        print(f"folded {len(events):,} events of the {args.load_shape} load in {wall:.0f} s; saved to {args.keep}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
